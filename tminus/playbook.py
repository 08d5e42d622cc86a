"""The playbook: which activities each tier gets, when, by whom, and what their issues say.

The default (``tminus/playbooks/default.yaml``) is the activity matrix of the launch handbooks;
a company points ``TMINUS_PLAYBOOK`` at its own copy. Loading validates everything, including a
trial render of every template, so a broken playbook fails before a launch touches anything.
"""

from __future__ import annotations

from datetime import date
from enum import Enum
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tminus.errors import PlaybookError
from tminus.request import SLUG_PATTERN, Feature, LaunchRequest, Tier
from tminus.validation import describe_validation_error, read_yaml_mapping

DEFAULT_PLAYBOOK = "default.yaml"


class Frequency(str, Enum):
    always = "always"
    sometimes = "sometimes"


class Kind(str, Enum):
    """What an activity becomes."""

    issue = "issue"
    calendar = "calendar"
    page_check = "page_check"
    notification = "notification"


Slug = Annotated[str, Field(pattern=SLUG_PATTERN)]


class Activity(BaseModel):
    """One row of the activity matrix."""

    model_config = ConfigDict(extra="forbid")

    key: Slug = Field(description="Stable id; part of every issue and event key.")
    title: str = Field(min_length=3, max_length=200)
    tiers: dict[Tier, Frequency] = Field(
        description="Per tier: always, or sometimes (only when the launch switches it on). "
        "A tier not listed never gets the activity."
    )
    lead_time_days: int = Field(
        ge=-60, le=365, description="Days before launch day the activity is due (0 = launch day)."
    )
    owner_role: Slug = Field(description="Role that does the work; a launch maps roles to people.")
    kind: Kind = Kind.issue
    labels: list[str] = []
    description: str = Field(default="", description="Issue body template (Jinja2).")
    checklist: list[str] = Field(default=[], description="Checklist item templates.")

    @model_validator(mode="after")
    def _has_tiers(self) -> Activity:
        if not self.tiers:
            raise ValueError("tiers is empty; list at least one of L1, L2, L3")
        return self

    def frequency(self, tier: Tier) -> Frequency | None:
        return self.tiers.get(tier)


class TrackingIssue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str
    description: str


class SisterIssue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str
    description: str
    engineering_questions: list[str] = Field(min_length=1)
    marketing_questions: list[str] = Field(min_length=1)
    labels: list[str] = []
    lead_time_days: int = Field(
        default=35, ge=-60, le=365, description="Days before launch day the answers are due."
    )


class Playbook(BaseModel):
    """A validated playbook."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=1)
    name: str = "default"
    roles: dict[Slug, str] = Field(description="Role key -> human name (e.g. docs: Docs team).")
    approval_tiers: list[Tier] = Field(
        default=[Tier.L1], description="Tiers whose sales notification waits for a PMM's approval."
    )
    labels: list[str] = Field(default=[], description="Labels put on every launch issue.")
    release_checklist: list[str] = Field(min_length=1)
    tracking_issue: TrackingIssue
    sister_issue: SisterIssue
    activities: list[Activity] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Playbook:
        seen: set[str] = set()
        for i, act in enumerate(self.activities):
            if act.key in seen:
                raise ValueError(
                    f"activities[{i}] ({act.key}): key is used twice; keys must be unique"
                )
            seen.add(act.key)
            if act.owner_role not in self.roles:
                raise ValueError(
                    f"activities[{i}] ({act.key}): owner_role {act.owner_role!r} is not in roles "
                    f"({', '.join(sorted(self.roles))}); add it to roles or fix the spelling"
                )
        return self

    def activity(self, key: str) -> Activity:
        for act in self.activities:
            if act.key == key:
                return act
        raise KeyError(key)

    def sometimes_keys(self, tier: Tier) -> list[str]:
        return [a.key for a in self.activities if a.frequency(tier) is Frequency.sometimes]


# --- templates ---------------------------------------------------------------------------

_env = SandboxedEnvironment(
    undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False
)


@lru_cache(maxsize=1024)
def _compiled(template: str) -> Template:
    return _env.from_string(template)


def render(template: str, context: dict[str, Any]) -> str:
    """Render a playbook template; undefined names are errors, never empty strings."""
    return _compiled(template).render(**context).strip()


_SAMPLE = LaunchRequest(
    slug="sample-launch",
    title="Sample launch",
    tier=Tier.L1,
    launch_date=date(2030, 1, 15),
    owner="pmm",
    project="group/project",
    features=[
        Feature(
            name="Sample feature",
            summary="A sample feature used to check templates.",
            docs_urls=["https://docs.example.com/sample"],  # type: ignore[list-item]
            features_page_title="Sample feature",
        )
    ],
    release_tag="v1.0.0",
)


def template_context(request: LaunchRequest, playbook: Playbook, **extra: Any) -> dict[str, Any]:
    """The names every template can use; documented in the default playbook's header."""
    return {"launch": request, "tier": request.tier.value, "roles": playbook.roles, **extra}


def _check_templates(playbook: Playbook) -> list[str]:
    """Trial-render every template against a sample launch; return problems."""
    problems: list[str] = []
    base = template_context(_SAMPLE, playbook)
    feature = _SAMPLE.features[0]

    def trial(where: str, template: str, **extra: Any) -> None:
        try:
            render(template, {**base, **extra})
        except TemplateError as exc:
            problems.append(f"{where}: template error: {exc}")

    trial("tracking_issue.title", playbook.tracking_issue.title, checklist="", release_checklist="")
    trial(
        "tracking_issue.description",
        playbook.tracking_issue.description,
        checklist="- [ ] item",
        release_checklist="- [ ] item",
        features=_SAMPLE.features,
    )
    sister = playbook.sister_issue
    trial("sister_issue.title", sister.title, feature=feature)
    trial("sister_issue.description", sister.description, feature=feature, questions="- [ ] q")
    for i, act in enumerate(playbook.activities):
        ctx = {"activity": act, "due": date(2030, 1, 1), "owner": "someone"}
        trial(f"activities[{i}] ({act.key}).title", act.title, **ctx)
        trial(f"activities[{i}] ({act.key}).description", act.description, **ctx, checklist="")
        for j, item in enumerate(act.checklist):
            trial(f"activities[{i}] ({act.key}).checklist[{j}]", item, **ctx)
    return problems


# --- loading -----------------------------------------------------------------------------


def default_playbook_path() -> Path:
    return Path(str(resources.files("tminus").joinpath("playbooks", DEFAULT_PLAYBOOK)))


def parse_playbook(data: dict[str, Any], source: str) -> Playbook:
    try:
        playbook = Playbook.model_validate(data)
    except ValidationError as exc:
        raise PlaybookError(source, describe_validation_error(exc)) from None
    problems = _check_templates(playbook)
    if problems:
        raise PlaybookError(source, problems)
    return playbook


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int) -> Playbook:
    return parse_playbook(read_yaml_mapping(Path(path), PlaybookError), path)


def load_playbook(path: str | Path | None = None) -> Playbook:
    """Load and validate a playbook (the packaged default when ``path`` is None)."""
    resolved = Path(path) if path else default_playbook_path()
    try:
        mtime = resolved.stat().st_mtime_ns
    except FileNotFoundError:
        raise PlaybookError(str(resolved), ["file not found; check TMINUS_PLAYBOOK"]) from None
    return _load_cached(str(resolved), mtime)
