"""The on-release flow: a GitLab release (through the webhook receiver's event) starts,
updates or cancels a launch.

No ``from __future__ import annotations``: deployment runs validate parameters against the
flow's signature (see flows/launch.py).
"""

from contextlib import closing
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from tminus.domain.planner import fit_to_tier
from tminus.domain.release import Release, decide_tier, request_from_release
from tminus.domain.request import LaunchRequest, Tier
from tminus.flows.launch import launch
from tminus.integrations.files import find_launch_file, load_launch_file
from tminus.integrations.gitlab import build_tracker
from tminus.integrations.gitlab_repo import team_playbook
from tminus.settings import load_settings
from tminus.tasks.issues import cancel_launch


@flow(name="on-release")
def on_release(release: Release) -> dict[str, Any]:
    """A GitLab release became a launch. The tier comes from a `Launch-Tier: L1|L2|L3` line in
    the release description, else from a launch file whose release_tag matches, else from the
    project's default tier; the run records which rule decided. `create` and `update` run the
    launch (idempotent, so a repeat changes nothing); `delete` marks the launch cancelled
    (label and comment) and deletes nothing.
    """
    logger = get_run_logger()
    settings = load_settings()
    today = datetime.now(ZoneInfo(settings.timezone)).date()
    path = find_launch_file(settings.launches_dir, release.tag)
    launch_file: LaunchRequest | None = load_launch_file(path) if path else None
    decision = decide_tier(
        release,
        launch_file,
        str(path) if path else None,
        Tier(settings.tier_for_project(release.project_path)),
    )
    request = request_from_release(
        release,
        decision,
        launch_file=launch_file,
        owner=settings.release_owner,
        launch_project=settings.launch_project,
        today=today,
    )
    request, notes = fit_to_tier(request, team_playbook(settings))
    for note in notes:
        logger.warning(note)
    logger.info(
        "Release %s of %s (%s): tier %s, decided by the %s",
        release.tag,
        release.project_path,
        release.action,
        decision.tier.value,
        decision.rule,
    )
    create_markdown_artifact(
        key=f"release-{request.slug}",
        markdown=(
            f"# Release {release.tag} of {release.project_path}: {release.action}\n\n"
            f"- Launch: `{request.slug}` ({request.title})\n"
            f"- Tier **{decision.tier.value}**, decided by the {decision.rule}\n"
            f"- Delivery: `{release.delivery or 'n/a'}`\n"
        ),
        description=f"How release {release.tag} became launch {request.slug}",
    )
    outcome: dict[str, Any] = {
        "launch": request.slug,
        "tier": decision.tier.value,
        "tier_rule": decision.rule,
        "action": release.action,
    }
    if release.action == "delete":
        with closing(build_tracker(settings)) as tracker:
            reason = f"release {release.tag} was deleted in GitLab"
            result = cancel_launch(tracker, request, reason)
        outcome["cancelled"] = result.outcome.value
        outcome["tracking_url"] = result.url
        return outcome
    report = launch(request=request)
    outcome.update(counts=report.counts, tracking_url=report.tracking_url)
    return outcome
