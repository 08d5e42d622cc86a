"""From a GitLab release to a launch request (pure: the caller reads files and settings).

The tier comes, in order, from a ``Launch-Tier: L1|L2|L3`` line in the release description,
from a launch file in the launches folder whose ``release_tag`` matches the release tag, or
from the project's default tier. The rule that decided is recorded with the request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from tminus.errors import LaunchFileError
from tminus.request import LaunchRequest, Tier, parse_launch_request, slugify

TIER_LINE = re.compile(r"^\s*Launch-Tier:\s*(\S+)\s*$", re.IGNORECASE | re.MULTILINE)


class ReleaseProject(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int | None = None
    path_with_namespace: str = Field(description="The project's full path, e.g. group/project.")
    web_url: str | None = None


class Release(BaseModel):
    """A GitLab release, as the webhook receiver's ``gitlab.release.*`` event carries it."""

    model_config = ConfigDict(extra="ignore")

    action: Literal["create", "update", "delete"] = Field(description="What happened to it.")
    tag: str = Field(min_length=1, description="The release's tag, e.g. v17.2.0.")
    name: str | None = Field(default=None, description="The release title.")
    description: str | None = Field(
        default=None, description="Release notes; a 'Launch-Tier: L2' line decides the tier."
    )
    url: str | None = Field(default=None, description="The release page.")
    released_at: str | None = Field(default=None, description="ISO 8601 time of the release.")
    project: ReleaseProject
    delivery: str | None = Field(default=None, description="The webhook delivery it came from.")

    @property
    def project_path(self) -> str:
        return self.project.path_with_namespace


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


def find_launch_file(folder: Path | None, tag: str) -> Path | None:
    """A launch file for this release: ``<tag>.yaml`` or any file with ``release_tag: <tag>``."""
    if folder is None or not folder.is_dir():
        return None
    direct = [folder / f"{tag}.yaml", folder / f"{tag}.yml"]
    for path in direct:
        if path.is_file():
            return path
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        # Match on the raw file: a launch file for this release with a mistake in it must fail
        # the run naming the mistake, not be passed over for a made-up launch.
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(raw, dict) and str(raw.get("release_tag")) == tag:
            return path
    return None


def decide_tier(
    release: Release,
    launch_file: LaunchRequest | None,
    launch_file_path: Path | None,
    project_default: Tier,
) -> TierDecision:
    from_description = tier_from_description(release.description)
    if from_description is not None:
        return TierDecision(from_description, "Launch-Tier line in the release description")
    if launch_file is not None:
        return TierDecision(launch_file.tier, f"launch file {launch_file_path}")
    return TierDecision(project_default, f"default tier of project {release.project_path}")


def release_day(release: Release, today: date) -> date:
    if release.released_at:
        try:
            return datetime.fromisoformat(release.released_at.replace("Z", "+00:00")).date()
        except ValueError:
            pass
    return today


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
    name = release.name or release.tag
    summary = next(
        (
            ln.strip()
            for ln in (release.description or "").splitlines()
            if ln.strip() and not TIER_LINE.match(ln)
        ),
        f"Release {release.tag} of {release.project_path}.",
    )
    data: dict[str, Any] = {
        "slug": slugify(f"{release.project_path.rsplit('/', 1)[-1]}-{release.tag}")[:48].strip("-"),
        "title": name if len(name) >= 3 else f"Release {name}",
        "tier": decision.tier.value,
        "launch_date": release_day(release, today).isoformat(),
        "owner": owner,
        "project": launch_project or release.project_path,
        "release_tag": release.tag,
        "features": [
            {
                "name": name if len(name) >= 2 else f"Release {name}",
                "summary": (summary if len(summary) >= 10 else f"Release {release.tag}: {summary}")[
                    :280
                ],
                "docs_urls": [release.url] if release.url else [],
                "features_page_title": name if len(name) >= 2 else f"Release {name}",
            }
        ],
    }
    return parse_launch_request(data, f"release {release.tag} of {release.project_path}")
