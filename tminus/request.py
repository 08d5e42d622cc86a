"""The launch request: the one validated input every trigger produces.

A PMM writes it as a YAML launch file, fills it in the Prefect UI form, or a GitLab release
produces it. Field descriptions double as the UI form's help text, so keep them short and true.
Defaults use ``default=`` (not ``default_factory``) because the Prefect UI shows only those.
"""

from __future__ import annotations

import re
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    field_validator,
    model_validator,
)

from tminus.errors import LaunchFileError
from tminus.validation import describe_validation_error, read_yaml_mapping

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$"
# GitLab usernames: letters, digits, _, -, . ; no leading/trailing special character.
USERNAME_PATTERN = r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,253}[A-Za-z0-9_])?$"
# A project's full path (group/subgroup/project) or its numeric id.
PROJECT_PATTERN = r"^(?:\d+|[A-Za-z0-9_.][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_.][A-Za-z0-9_.-]*)+)$"
LABEL_PATTERN = r"^[^,\n]{1,255}$"


class Tier(str, Enum):
    """How big a launch is; decides which activities it gets."""

    L1 = "L1"
    L2 = "L2"
    L3 = "L3"

    @property
    def size(self) -> str:
        return {"L1": "Large", "L2": "Medium", "L3": "Small"}[self.value]


class Feature(BaseModel):
    """A priority feature of the launch: gets a sister marketing issue and page checks."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(
        min_length=2, max_length=120, description="Feature name as customers will see it."
    )
    summary: str = Field(
        min_length=10,
        max_length=280,
        description="One line: what it does and for whom.",
    )
    docs_urls: list[HttpUrl] = Field(
        min_length=1, description="Docs pages that must describe the feature (at least one)."
    )
    features_page_title: str = Field(
        min_length=2,
        max_length=120,
        description="The feature's title on the /features page and its compare view.",
    )
    audience: str | None = Field(
        default=None, max_length=280, description="Sales kit: who it is for."
    )
    pain: str | None = Field(
        default=None, max_length=280, description="Sales kit: the pain it solves."
    )
    selling_points: list[str] = Field(
        default=[], max_length=8, description="Sales kit: key selling points, one line each."
    )
    limitations: list[str] = Field(
        default=[], max_length=8, description="Sales kit: limitations sales must know."
    )

    @field_validator("summary")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value:
            raise ValueError("the summary must be one line; move details to the sister issue")
        return value

    @property
    def slug(self) -> str:
        return slugify(self.name)


class Pitch(BaseModel):
    """The launch described in 25, 50 and 100 words, for sales."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    words_25: str = Field(description="At most 25 words.")
    words_50: str = Field(description="At most 50 words.")
    words_100: str = Field(description="At most 100 words.")

    @model_validator(mode="after")
    def _word_counts(self) -> Pitch:
        for name, limit in (("words_25", 25), ("words_50", 50), ("words_100", 100)):
            count = len(getattr(self, name).split())
            if count > limit:
                raise ValueError(f"{name} has {count} words; shorten it to {limit} or fewer")
        return self


class LaunchRequest(BaseModel):
    """A launch decision: what ships, when, how big, and who owns it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    slug: Annotated[str, Field(pattern=SLUG_PATTERN)] = Field(
        description="Stable id of the launch: lowercase letters, digits and dashes (e.g. "
        "'duo-chat-ga'). Every issue and event is keyed by it; do not change it after the "
        "first run."
    )
    title: str = Field(min_length=3, max_length=120, description="Launch name, e.g. 'Duo Chat GA'.")
    tier: Tier = Field(
        description="L1 (large: new product or SKU), L2 (medium: new feature or GA), "
        "L3 (small: incremental)."
    )
    launch_date: date = Field(description="Launch day (YYYY-MM-DD); due dates count back from it.")
    owner: Annotated[str, Field(pattern=USERNAME_PATTERN)] = Field(
        description="GitLab username of the PMM who owns the launch (without @)."
    )
    project: Annotated[str, Field(pattern=PROJECT_PATTERN)] = Field(
        description="GitLab project for the launch issues: full path (group/project) or id."
    )
    features: list[Feature] = Field(
        min_length=1, description="Priority features: each gets a sister marketing issue."
    )
    release_tag: str | None = Field(
        default=None, max_length=255, description="GitLab release tag, e.g. 'v17.2.0' (optional)."
    )
    optional_activities: list[str] = Field(
        default=[],
        description="Keys of playbook activities that are 'sometimes' for this tier and should "
        "happen (e.g. 'launch-video'). See `tminus playbook`.",
    )
    team: dict[str, Annotated[str, Field(pattern=USERNAME_PATTERN)]] = Field(
        default={},
        description="Who does what: playbook owner role -> GitLab username (e.g. docs: ada). "
        "Activities of a role not listed stay unassigned.",
    )
    labels: list[Annotated[str, Field(pattern=LABEL_PATTERN)]] = Field(
        default=[], description="Extra labels put on every issue of the launch."
    )
    pitch: Pitch | None = Field(
        default=None, description="Sales kit: the launch in 25, 50 and 100 words."
    )
    blog_url: HttpUrl | None = Field(default=None, description="Sales kit: the launch blog post.")
    training: str | None = Field(
        default=None, max_length=280, description="Sales kit: where and when sales is trained."
    )

    @field_validator("owner", mode="before")
    @classmethod
    def _strip_at(cls, value: Any) -> Any:
        return value.lstrip("@") if isinstance(value, str) else value

    @field_validator("team", mode="before")
    @classmethod
    def _strip_team_at(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v.lstrip("@") if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("features")
    @classmethod
    def _unique_features(cls, value: list[Feature]) -> list[Feature]:
        seen: dict[str, str] = {}
        for feature in value:
            if feature.slug in seen:
                raise ValueError(
                    f"features {seen[feature.slug]!r} and {feature.name!r} have the same key "
                    f"{feature.slug!r}; give them distinct names"
                )
            seen[feature.slug] = feature.name
        return value

    @property
    def launch_label(self) -> str:
        return f"launch::{self.slug}"

    @property
    def tier_label(self) -> str:
        return f"launch-tier::{self.tier.value}"


def slugify(text: str) -> str:
    """Lowercase, dash-separated key for a name ('Duo Chat (Beta)' -> 'duo-chat-beta')."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "item"


def parse_launch_request(data: dict[str, Any], source: str = "launch request") -> LaunchRequest:
    """Validate raw data; raise LaunchFileError listing every problem with its field."""
    try:
        return LaunchRequest.model_validate(data)
    except ValidationError as exc:
        raise LaunchFileError(source, describe_validation_error(exc)) from None


def load_launch_file(path: str | Path) -> LaunchRequest:
    """Read and validate a YAML launch file."""
    path = Path(path)
    return parse_launch_request(read_yaml_mapping(path, LaunchFileError), str(path))
