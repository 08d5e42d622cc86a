"""The launch request: the one validated input every trigger produces.

A PMM writes it as a YAML launch file, fills it in the Prefect UI form, or a GitLab release
produces it. Field descriptions double as the UI form's help text, so keep them short and true.
Defaults use ``default=`` (not ``default_factory``) because the Prefect UI shows only those.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    field_validator,
    model_validator,
)

from tminus.domain.tiering import Tier as Tier
from tminus.domain.tiering import TierAssessment
from tminus.domain.validation import (
    describe_validation_error,
    parse_yaml_mapping,
    show_value,
)
from tminus.errors import LaunchFileError

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$"
# GitLab usernames: letters, digits, _, -, . ; no leading/trailing special character.
USERNAME_PATTERN = r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,253}[A-Za-z0-9_])?$"

# Launch days tminus accepts. Due dates count back from launch day by at most a year (the
# playbook's lead times), and every system written to (GitLab due dates, Calendar all-day
# events that end the day after, iCalendar, Slack text) takes any day within a year of this
# window, so nothing validated here can fail later for its date.
LAUNCH_DATE_MIN = date(2000, 1, 1)
LAUNCH_DATE_MAX = date(2100, 12, 31)

# GitLab project paths: each segment letters, digits, '_', '-', '.'; starting and ending with
# a letter, digit or '_'; at most 20 nested groups. Or a project's numeric id.
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,253}[A-Za-z0-9_])?")
_PROJECT_DEPTH = 21
_PROJECT_ID = re.compile(r"[1-9][0-9]{0,17}")
PROJECT_MAX = 1024
# All docs links of a launch together (they are listed in one issue; see LaunchRequest).
DOCS_URLS_TOTAL_MAX = 40_000

# Characters no field may hold: control characters (NUL breaks GitLab's database) and lone
# surrogates (they cannot be sent as UTF-8). Text fields may keep newlines and tabs.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def _no_control(value: str, pattern: re.Pattern[str], what: str) -> str:
    bad = pattern.search(value)
    if bad:
        raise ValueError(
            f"{what} holds the character {bad.group()!r} at position {bad.start() + 1}; remove it"
        )
    return value


def _line(value: str) -> str:
    return _no_control(value, _CONTROL_OR_NEWLINE, "one line of text")


def _text(value: str) -> str:
    return _no_control(value, _CONTROL, "the text")


def _label(value: str) -> str:
    if "," in value:
        raise ValueError("a label cannot hold a comma (GitLab would split it in two)")
    return value


Line = Annotated[str, AfterValidator(_line)]
Text = Annotated[str, AfterValidator(_text)]
Username = Annotated[str, Field(pattern=USERNAME_PATTERN)]
Key = Annotated[str, Field(pattern=SLUG_PATTERN)]
# One label: GitLab keeps at most 255 characters.
Label = Annotated[Line, Field(min_length=1, max_length=255), AfterValidator(_label)]
Item = Annotated[Line, Field(min_length=1, max_length=280)]


def project_problem(value: str) -> str | None:
    """Why ``value`` is not a GitLab project path or id, or None when it is one."""
    if _PROJECT_ID.fullmatch(value):
        return None
    if value.isdigit():
        return "a project id is a positive number"
    if len(value) > PROJECT_MAX:
        return f"a project path has at most {PROJECT_MAX} characters"
    segments = value.split("/")
    if len(segments) < 2:
        return "give the project's full path (group/project) or its numeric id"
    if len(segments) > _PROJECT_DEPTH:
        return f"a project path has at most {_PROJECT_DEPTH} parts (20 nested groups)"
    for segment in segments:
        if not segment:
            return "a project path has no empty parts (no leading, trailing or double '/')"
        if not _PATH_SEGMENT.fullmatch(segment):
            return (
                f"part {segment[:40]!r} is not a GitLab path: use letters, digits, '_', '-' "
                "and '.', starting and ending with a letter, digit or '_' (at most 255)"
            )
        if ".." in segment or segment.endswith((".git", ".atom")):
            return f"part {segment[:40]!r} is not a GitLab path (no '..', '.git' or '.atom')"
    return None


class Feature(BaseModel):
    """A priority feature of the launch: gets a sister marketing issue and page checks."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Line = Field(
        min_length=2, max_length=120, description="Feature name as customers will see it."
    )
    summary: Text = Field(
        min_length=10,
        max_length=280,
        description="One line: what it does and for whom.",
    )
    docs_urls: list[HttpUrl] = Field(
        min_length=1,
        max_length=5,
        description="Docs pages that must describe the feature (one to five).",
    )
    features_page_title: Line = Field(
        min_length=2,
        max_length=120,
        description="The feature's title on the /features page and its compare view.",
    )
    audience: Text | None = Field(
        default=None, max_length=280, description="Sales kit: who it is for."
    )
    pain: Text | None = Field(
        default=None, max_length=280, description="Sales kit: the pain it solves."
    )
    benefit: Text | None = Field(
        default=None, max_length=280, description="Sales kit: the measurable benefit."
    )
    workflow: Text | None = Field(
        default=None, max_length=280, description="Sales kit: how it changes their workflow."
    )
    selling_points: list[Item] = Field(
        default=[], max_length=8, description="Sales kit: key selling points, one line each."
    )
    limitations: list[Item] = Field(
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

    words_25: Text = Field(max_length=400, description="At most 25 words.")
    words_50: Text = Field(max_length=800, description="At most 50 words.")
    words_100: Text = Field(max_length=1600, description="At most 100 words.")

    @model_validator(mode="after")
    def _word_counts(self) -> Pitch:
        for name, limit in (("words_25", 25), ("words_50", 50), ("words_100", 100)):
            count = len(getattr(self, name).split())
            if count > limit:
                raise ValueError(f"{name} has {count} words; shorten it to {limit} or fewer")
        return self


class TierOverride(BaseModel):
    """Who chose a tier other than the questionnaire's, and why (shown on the tracking issue)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    by: Username = Field(description="GitLab username of who decided.")
    why: Text = Field(min_length=10, max_length=500, description="Why this tier.")

    @field_validator("by", mode="before")
    @classmethod
    def _strip_at(cls, value: Any) -> Any:
        return value.lstrip("@") if isinstance(value, str) else value


class SuccessMetric(BaseModel):
    """A target the launch is judged by after launch day; its actual is entered in the
    retrospective issue and shown against the target in the audit from T+30."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Line = Field(min_length=2, max_length=120, description="e.g. 'Weekly active users'.")
    target: Line = Field(min_length=1, max_length=120, description="e.g. '500 by T+30'.")
    source: Line = Field(
        min_length=1, max_length=280, description="Where the actual is read, e.g. a dashboard."
    )

    @field_validator("name", "target", "source")
    @classmethod
    def _no_pipe(cls, value: str) -> str:
        if "|" in value:
            raise ValueError("'|' cannot be used: the metric is shown as a table row")
        return value


class LaunchRequest(BaseModel):
    """A launch decision: what ships, when, how big, and who owns it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    slug: Key = Field(
        description="Stable id of the launch: lowercase letters, digits and dashes (e.g. "
        "'duo-chat-ga'). Every issue and event is keyed by it; do not change it after the "
        "first run."
    )
    title: Line = Field(
        min_length=3, max_length=120, description="Launch name, e.g. 'Duo Chat GA'."
    )
    tier: Tier = Field(
        description="L1 (large: new product or SKU), L2 (medium: new feature or GA), "
        "L3 (small: incremental)."
    )
    launch_date: date = Field(
        description="Launch day (YYYY-MM-DD, years 2000 to 2100); due dates count back from it."
    )
    owner: Username = Field(
        description="GitLab username of the PMM who owns the launch (without @)."
    )
    project: str = Field(
        max_length=PROJECT_MAX,
        description="GitLab project for the launch issues: full path (group/project) or id.",
    )
    features: list[Feature] = Field(
        min_length=1,
        max_length=20,
        description="Priority features (one to twenty): each gets a sister marketing issue.",
    )
    release_tag: Line | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="GitLab release tag, e.g. 'v17.2.0' (optional).",
    )
    optional_activities: list[Key] = Field(
        default=[],
        max_length=50,
        description="Keys of playbook activities that are 'sometimes' for this tier and should "
        "happen (e.g. 'launch-video'). See `tminus playbook`.",
    )
    team: dict[str, Username] = Field(
        default={},
        max_length=50,
        description="Who does what: playbook owner role -> GitLab username (e.g. docs: ada). "
        "Activities of a role not listed stay unassigned.",
    )
    labels: list[Label] = Field(
        default=[], max_length=20, description="Extra labels put on every issue of the launch."
    )
    pitch: Pitch | None = Field(
        default=None, description="Sales kit: the launch in 25, 50 and 100 words."
    )
    blog_url: HttpUrl | None = Field(default=None, description="Sales kit: the launch blog post.")
    training: Text | None = Field(
        default=None, max_length=280, description="Sales kit: where and when sales is trained."
    )
    tier_assessment: TierAssessment | None = Field(
        default=None,
        description="The tier questionnaire's answers; the launch records the recommended tier.",
    )
    tier_override: TierOverride | None = Field(
        default=None,
        description="When the tier differs from the recommended one: who chose it, and why.",
    )
    success_metrics: list[SuccessMetric] = Field(
        default=[],
        max_length=10,
        description="Optional targets (name, target, source); actuals are entered in the "
        "retrospective issue and shown against them in the audit from T+30.",
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

    @field_validator("team")
    @classmethod
    def _team_roles(cls, value: dict[str, str]) -> dict[str, str]:
        # Checked here rather than in the type so the UI form keeps a plain key -> value editor.
        for role in value:
            if not re.fullmatch(SLUG_PATTERN, role):
                raise ValueError(
                    f"role {show_value(role)} is not a playbook role key (lowercase letters, "
                    "digits and dashes, at most 48)"
                )
        return value

    @field_validator("features")
    @classmethod
    def _docs_fit(cls, value: list[Feature]) -> list[Feature]:
        # Every docs link lands in one issue (the docs activity's description), and one
        # rendered description is at most 65,536 characters.
        total = sum(len(str(url)) for feature in value for url in feature.docs_urls)
        if total > DOCS_URLS_TOTAL_MAX:
            raise ValueError(
                f"the docs_urls of all features are {total} characters together; at most "
                f"{DOCS_URLS_TOTAL_MAX} fit in the docs issue: shorten or drop links"
            )
        return value

    @field_validator("project", mode="before")
    @classmethod
    def _project_id(cls, value: Any) -> Any:
        # A YAML project id is a number; GitLab takes it as text in the API path.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("project")
    @classmethod
    def _project_path(cls, value: str) -> str:
        problem = project_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("launch_date")
    @classmethod
    def _in_window(cls, value: date) -> date:
        if not LAUNCH_DATE_MIN <= value <= LAUNCH_DATE_MAX:
            raise ValueError(
                f"launch day must fall between {LAUNCH_DATE_MIN} and {LAUNCH_DATE_MAX}"
            )
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

    @field_validator("success_metrics")
    @classmethod
    def _unique_metrics(cls, value: list[SuccessMetric]) -> list[SuccessMetric]:
        # The retrospective's table matches actuals to metrics by name.
        names = [m.name.casefold() for m in value]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"metric {value[i].name!r} is listed twice; give each its name")
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


def parse_launch_file(raw: bytes, source: str) -> LaunchRequest:
    """Validate the bytes of a YAML launch file; errors name ``source`` (the file).

    Reading it is ``tminus.integrations.files.load_launch_file``'s job.
    """
    return parse_launch_request(parse_yaml_mapping(raw, source, LaunchFileError), source)
