"""From a GitLab release to a launch request (pure: the caller reads files and settings;
``tminus.integrations.files.find_launch_file`` looks through the launches folder).

The tier comes, in order, from a ``Launch-Tier: L1|L2|L3`` line in the release description,
from a launch file in the launches folder whose ``release_tag`` matches the release tag, or
from the project's default tier. The rule that decided is recorded with the request.

``Release`` is the on-release flow's parameter, and the webhook receiver builds the event
payload as one, so every value is bounded to what GitLab really sends: ids are positive 32-bit
integers, tags follow git's ref-name rules, paths GitLab's path rules, URLs are http(s), and
the description is an excerpt (``description_excerpt``) that keeps what decides the launch.
A release the receiver accepts is therefore a parameter Prefect accepts (well under its
512 KiB limit) and the flow can run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, TypeAdapter

from tminus.domain.request import (
    LAUNCH_DATE_MAX,
    LAUNCH_DATE_MIN,
    LaunchRequest,
    Tier,
    parse_launch_request,
    slugify,
)
from tminus.errors import LaunchFileError

TIER_LINE = re.compile(r"^\s*Launch-Tier:\s*(\S+)\s*$", re.IGNORECASE | re.MULTILINE)

# --- what a GitLab release can hold ------------------------------------------------------------

# GitLab's ids (projects.id and the like) are PostgreSQL integer columns.
GITLAB_MAX_ID = 2**31 - 1
TAG_MAX_CHARS = 255  # also LaunchRequest.release_tag's limit
NAME_MAX_CHARS = 1024
PATH_MAX_CHARS = 1024
URL_MAX_CHARS = 2048
DELIVERY_MAX_CHARS = 255
# What the run receives of the release notes: the decision needs one line, the launch's
# summary one more; the rest stays in GitLab.
DESCRIPTION_MAX_CHARS = 4000
TIER_VALUE_MAX_CHARS = 40  # longer is never a tier; kept short enough to show in the error
# A release's day becomes the launch day, so its time must fall in the launch-day window
# (a release outside it would be accepted with 202, then fail in its run).
EARLIEST_RELEASE = datetime.combine(LAUNCH_DATE_MIN, time.min, tzinfo=UTC)
LATEST_RELEASE = datetime.combine(LAUNCH_DATE_MAX, time.max, tzinfo=UTC)
# GitLab's namespace and project paths: 2 to 21 parts (20 nested groups) of letters, digits,
# '_', '-' and '.', each starting and ending with a letter, digit or '_', with no '..' and not
# ending in '.git' or '.atom' (so never '.' or '..'). What tminus.domain.request takes as a project.
PATH_PATTERN = r"^[A-Za-z0-9_.\-/]+$"
_PATH_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,253}[A-Za-z0-9_])?")
# git check-ref-format: no ASCII control characters, space, ~ ^ : ? * [ or backslash.
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)


def check_text(value: str) -> str:
    """Text every system downstream can store: no NUL (PostgreSQL refuses it) and no unpaired
    surrogate (not encodable as UTF-8)."""
    if "\x00" in value:
        raise ValueError("contains a NUL character; remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"contains an unpaired surrogate at character {exc.start}; send valid Unicode"
        ) from None
    return value


def check_tag_name(tag: str) -> str:
    """git's ref-name rules (``git check-ref-format``), plus GitLab's 'no leading -'."""
    problems = []
    if _REF_FORBIDDEN.search(tag):
        problems.append("no spaces, control characters or any of ~ ^ : ? * [ \\")
    if ".." in tag:
        problems.append("no '..'")
    if "@{" in tag or tag == "@":
        problems.append("no '@{' and not '@' alone")
    if tag.startswith(("-", "/")):
        problems.append("must not start with '-' or '/'")
    if tag.endswith(("/", ".")) or "//" in tag:
        problems.append("must not end with '/' or '.', nor contain '//'")
    if any(part.startswith(".") or part.endswith(".lock") for part in tag.split("/")):
        problems.append("no part may start with '.' or end with '.lock'")
    if problems:
        raise ValueError("is not a valid git tag name (" + "; ".join(problems) + ")")
    return check_text(tag)


def check_project_path(value: str) -> str:
    """A GitLab project's full path (``group/subgroup/project``)."""
    parts = value.split("/")
    if not 2 <= len(parts) <= 21:
        raise ValueError("is not a project's full path: give group/project (at most 20 groups)")
    for part in parts:
        if not _PATH_PART.fullmatch(part) or ".." in part or part.endswith((".git", ".atom")):
            raise ValueError(
                f"has the part {part[:40]!r}, not a GitLab path: use letters, digits, '_', '-' "
                "and '.', starting and ending with a letter, digit or '_' (no '..', '.git')"
            )
    return value


def check_http_url(value: str) -> str:
    """An http(s) URL (as pydantic's ``HttpUrl`` checks it); the text is kept as sent."""
    check_text(value)
    _HTTP_URL.validate_python(value)
    return value


def check_release_time(value: datetime) -> datetime:
    """The time in UTC, within the years a launch date can be planned from."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST_RELEASE <= utc <= LATEST_RELEASE:
        raise ValueError(
            f"is out of range; give a time between {EARLIEST_RELEASE:%Y-%m-%d} and "
            f"{LATEST_RELEASE:%Y-%m-%d} (UTC)"
        )
    return utc


def _check_iso_time(value: str) -> str:
    """ISO 8601 text of a time or date in range (the receiver sends UTC)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("is not an ISO 8601 time such as 2020-11-02T12:55:12+00:00") from None
    check_release_time(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    return value


GitLabId = Annotated[int, Field(strict=True, ge=1, le=GITLAB_MAX_ID)]
TagName = Annotated[
    str, Field(min_length=1, max_length=TAG_MAX_CHARS), AfterValidator(check_tag_name)
]
ProjectPath = Annotated[
    str,
    Field(max_length=PATH_MAX_CHARS, pattern=PATH_PATTERN),
    AfterValidator(check_project_path),
]
WebUrl = Annotated[
    str, Field(min_length=1, max_length=URL_MAX_CHARS), AfterValidator(check_http_url)
]
ReleaseName = Annotated[str, Field(max_length=NAME_MAX_CHARS), AfterValidator(check_text)]
Text = Annotated[str, AfterValidator(check_text)]
ReleaseTime = Annotated[str, Field(max_length=64), AfterValidator(_check_iso_time)]
DeliveryKey = Annotated[
    str, Field(min_length=1, max_length=DELIVERY_MAX_CHARS), AfterValidator(check_text)
]


class ReleaseProject(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: GitLabId | None = Field(default=None, description="The project's GitLab id.")
    path_with_namespace: ProjectPath = Field(
        description="The project's full path, e.g. group/project."
    )
    web_url: WebUrl | None = Field(default=None, description="The project's page.")


class Release(BaseModel):
    """A GitLab release, as the webhook receiver's ``gitlab.release.*`` event carries it."""

    model_config = ConfigDict(extra="ignore")

    action: Literal["create", "update", "delete"] = Field(description="What happened to it.")
    tag: TagName = Field(description="The release's tag, e.g. v17.2.0.")
    name: ReleaseName | None = Field(default=None, description="The release title.")
    description: Annotated[Text, Field(max_length=DESCRIPTION_MAX_CHARS)] | None = Field(
        default=None,
        description="Release notes (an excerpt); a 'Launch-Tier: L2' line decides the tier.",
    )
    url: WebUrl | None = Field(default=None, description="The release page.")
    released_at: ReleaseTime | None = Field(
        default=None, description="ISO 8601 time of the release."
    )
    project: ReleaseProject
    delivery: DeliveryKey | None = Field(
        default=None, description="The webhook delivery it came from."
    )

    @property
    def project_path(self) -> str:
        return self.project.path_with_namespace


def description_excerpt(description: str, limit: int = DESCRIPTION_MAX_CHARS) -> str:
    """Release notes cut to ``limit`` characters, deciding what the whole notes decide.

    Short notes are kept as they are. Longer ones become: their first ``Launch-Tier:`` line
    (so the tier, or the error naming a bad value, is the same), the opening lines (where the
    launch's summary comes from) cut at a line end, and a note that the rest is in GitLab.
    """
    if len(description) <= limit:
        return description
    match = TIER_LINE.search(description)
    tier_line = f"Launch-Tier: {match.group(1)[:TIER_VALUE_MAX_CHARS]}\n" if match else ""
    note = f"\n[… shortened: the full notes ({len(description):,} characters) are in GitLab]"
    head = description[: max(0, limit - len(tier_line) - len(note))]
    line_end = head.rfind("\n")
    if line_end >= 0:
        head = head[: line_end + 1]
    excerpt = tier_line + head + note
    if match is None and TIER_LINE.search(excerpt):
        # A line cut short can read as a tier line the notes do not have.
        excerpt = tier_line + note.lstrip("\n")
    return excerpt


@dataclass(frozen=True)
class TierDecision:
    tier: Tier
    rule: str  # "release description" | "launch file <path>" | "project default" | ...


def tier_from_description(description: str | None) -> Tier | None:
    """The ``Launch-Tier:`` line of a release description; a bad value is an error."""
    match = TIER_LINE.search(description or "")
    if not match:
        return None
    value = match.group(1).upper()
    try:
        return Tier(value)
    except ValueError:
        raise LaunchFileError(
            "release description",
            [f"Launch-Tier: got {match.group(1)!r}; expected one of L1, L2, L3"],
        ) from None


def launch_file_names(tag: str) -> tuple[str, str]:
    """The names a launch file for the release tagged ``tag`` may have in the launches folder."""
    return (f"{tag}.yaml", f"{tag}.yml")


def is_launch_file_for(data: Mapping[str, Any], tag: str) -> bool:
    """Whether the raw data of a launch file names this release tag.

    Matched on the raw data, before validation: a launch file for this release with a mistake
    in it must fail the run naming the mistake, not be passed over for a made-up launch.
    """
    return str(data.get("release_tag")) == tag


def decide_tier(
    release: Release,
    launch_file: LaunchRequest | None,
    launch_file_source: str | None,
    project_default: Tier,
) -> TierDecision:
    from_description = tier_from_description(release.description)
    if from_description is not None:
        return TierDecision(from_description, "Launch-Tier line in the release description")
    if launch_file is not None:
        return TierDecision(launch_file.tier, f"launch file {launch_file_source}")
    return TierDecision(project_default, f"default tier of project {release.project_path}")


def release_day(release: Release, today: date) -> date:
    if release.released_at:
        try:
            return datetime.fromisoformat(release.released_at.replace("Z", "+00:00")).date()
        except ValueError:
            pass
    return today


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def _one_line(text: str) -> str:
    """Text as one line with single spaces: the launch request's fields are one-line."""
    return " ".join(_CONTROL.sub(" ", text).split())


def request_from_release(
    release: Release,
    decision: TierDecision,
    *,
    launch_file: LaunchRequest | None,
    owner: str,
    launch_project: str | None,
    today: date,
) -> LaunchRequest:
    """The launch request for a release: its launch file with the decided tier, or one built
    from the release itself (the release is the priority feature, its page the docs)."""
    if launch_file is not None:
        return launch_file.model_copy(update={"tier": decision.tier})
    # One line, single spaces: the request's fields are one-line and stripped.
    name = _one_line(release.name or "") or release.tag
    summary = next(
        (
            _one_line(ln)
            for ln in (release.description or "").splitlines()
            if _one_line(ln) and not TIER_LINE.match(ln)
        ),
        f"Release {release.tag} of {release.project_path}.",
    )
    feature_name = _fit(name if len(name) >= 2 else f"Release {name}", 120)
    docs_url = release.url or release.project.web_url
    data: dict[str, Any] = {
        "slug": slugify(f"{release.project_path.rsplit('/', 1)[-1]}-{release.tag}")[:48].strip("-"),
        "title": _fit(name if len(name) >= 3 else f"Release {name}", 120),
        "tier": decision.tier.value,
        "launch_date": release_day(release, today).isoformat(),
        "owner": owner,
        "project": launch_project or release.project_path,
        "release_tag": release.tag,
        "features": [
            {
                "name": feature_name,
                "summary": _fit(
                    summary if len(summary) >= 10 else f"Release {release.tag}: {summary}", 280
                ),
                "docs_urls": [docs_url] if docs_url else [],
                "features_page_title": feature_name,
            }
        ],
    }
    return parse_launch_request(data, f"release {release.tag} of {release.project_path}")
