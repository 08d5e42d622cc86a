"""The apply-launches flow: a push to the launches repository's default branch (a merge) runs
the launch files it changed.

Each changed launch file starts one run of the ``launch`` deployment, with an idempotency key
made of the commit and the file: a push delivered twice, or this flow run again, starts no
second run. A deleted launch file cancels its launch (label and comment on the tracking issue;
nothing is deleted). A changed ``playbook.yaml`` runs every launch file, as its preview showed.
An invalid file starts nothing and fails this run, naming the file and the field, after the
valid ones have started; the commit gets a failed ``tminus/apply`` status saying so.

No ``from __future__ import annotations``: deployment runs validate parameters against the
flow's signature (see flows/launch.py).
"""

from contextlib import closing
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from tminus.domain.planner import check_request
from tminus.domain.repository import (
    LAUNCHES_FOLDER,
    MAX_LAUNCHES_PER_CHANGE,
    Push,
    affected_launches,
)
from tminus.domain.request import LaunchRequest, parse_launch_file
from tminus.errors import InputError, LaunchFileError
from tminus.integrations.gitlab import build_tracker
from tminus.integrations.gitlab_repo import build_repository, check_launches_repo, team_playbook
from tminus.settings import load_settings
from tminus.tasks.issues import cancel_launch

LAUNCH_DEPLOYMENT = "launch/launch"
APPLY_STATUS = "tminus/apply"


def start_launch(request: LaunchRequest, key: str) -> str:
    """Start a run of the launch deployment (or find the one this key already started)."""
    run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync in a sync flow
        LAUNCH_DEPLOYMENT,
        parameters={"request": request.model_dump(mode="json")},
        idempotency_key=key,
        timeout=0,  # start it; the launch's own run reports how it went
        tags=["launches-as-code"],
    )
    return str(run.id)


@flow(name="apply-launches")
def apply_launches(push: Push) -> dict[str, Any]:
    """Run the launch files a merge to the launches repository's default branch changed: one
    launch run per changed file (a repeat of the same push starts none), cancel the launches
    whose files were deleted. A playbook change runs every launch file."""
    logger = get_run_logger()
    settings = load_settings()
    project = push.project.path_with_namespace
    check_launches_repo(project, settings)
    with closing(build_repository(settings)) as repo:
        default = push.project.default_branch or repo.default_branch(project)
        if push.branch != default:
            logger.info(
                "push to %s, not the default branch %s: nothing to do", push.branch, default
            )
            return {"status": f"skipped: {push.branch} is not {default}"}
        changes = repo.changes(project, push.before, push.after)
        affected = affected_launches(changes, repo.files(project, push.after, LAUNCHES_FOLDER))
        playbook = team_playbook(settings)
        started: dict[str, str] = {}
        invalid: dict[str, list[str]] = {}
        cancelled: dict[str, str] = {}
        if len(affected.run) > MAX_LAUNCHES_PER_CHANGE:
            logger.warning("%d launch files changed; runs start for all of them", len(affected.run))
        for path in affected.run:
            raw = repo.read(project, path, push.after)
            try:
                if raw is None:
                    raise LaunchFileError(path, ["is not in the commit any more"])
                request = parse_launch_file(raw, path)
                check_request(request, playbook, source=path)
            except InputError as exc:
                invalid[path] = list(exc.problems)
                logger.error("%s is not valid: %s", path, "; ".join(exc.problems))
                continue
            started[path] = start_launch(request, f"tminus:{project}:{push.after}:{path}")
            logger.info("%s: launch %s started (run %s)", path, request.slug, started[path])
        if affected.cancel:
            with closing(build_tracker(settings)) as tracker:
                for path in affected.cancel:
                    raw = repo.read(project, path, push.before)
                    try:
                        request = parse_launch_file(raw or b"", path)
                    except InputError:
                        logger.warning(
                            "%s was deleted and cannot be read: no launch to cancel", path
                        )
                        continue
                    reason = f"{path} was deleted from {project} in {push.after[:8]}"
                    cancelled[path] = cancel_launch(tracker, request, reason).outcome.value
        state = "failed" if invalid else "success"
        description = (
            f"{len(invalid)} launch file(s) invalid: " + ", ".join(invalid)
            if invalid
            else f"{len(started)} launch(es) started, {len(cancelled)} cancelled"
        )
        repo.set_commit_status(
            project, push.after, name=APPLY_STATUS, state=state, description=description
        )
    lines = [f"# Push {push.after[:8]} to {project} {push.branch}", ""]
    lines += [f"- `{p}`: launch run `{r}`" for p, r in started.items()]
    lines += [f"- `{p}`: cancelled ({o})" for p, o in cancelled.items()]
    lines += [f"- `{p}`: **invalid**: {'; '.join(v)}" for p, v in invalid.items()]
    create_markdown_artifact(
        key=f"apply-{push.after[:12]}",
        markdown="\n".join(lines) + "\n",
        description=f"What push {push.after[:8]} started",
    )
    if invalid:
        raise LaunchFileError(
            ", ".join(invalid), [f"{p}: {'; '.join(v)}" for p, v in invalid.items()]
        )
    return {
        "started": started,
        "cancelled": cancelled,
        "playbook_changed": affected.playbook_changed,
    }
