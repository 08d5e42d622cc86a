"""The apply-launches flow: a push to the launches repository's default branch (a merge) runs
the launch files it changed.

Each changed launch file starts one run of the ``launch`` deployment, with an idempotency key
made of the commit and the file: a push delivered twice, or this flow run again, starts no
second run. Files are read at the branch's head when the run starts, so applies of two quick
merges, in whatever order they run, both apply the newest content; the change is what this
push changed (a straight compare, right after a force-push too). Two files with one slug are
both refused; a file moved within ``launches/`` keeps its launch.
A deleted launch file cancels its launch (label and comment on the tracking issue;
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

from tminus.domain.preview import LaunchPreview, same_slugs
from tminus.domain.repository import (
    LAUNCHES_FOLDER,
    Push,
    affected_launches,
)
from tminus.domain.request import LaunchRequest, parse_launch_file
from tminus.errors import InputError, LaunchFileError, PlaybookError
from tminus.flows.preview import check_file
from tminus.integrations.files import load_playbook
from tminus.integrations.gitlab import build_tracker
from tminus.integrations.gitlab_repo import (
    build_repository,
    check_launches_repo,
    repository_playbook,
)
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
        # straight: what this push changed, even when it rewrote history (a force-push).
        changes = repo.changes(project, push.before, push.after, straight=True)
        affected = affected_launches(changes, repo.files(project, push.after, LAUNCHES_FOLDER))
        # Files are read at the branch's head now, not at this push: two quick merges may
        # have their applies run in any order, and both then apply the newest content.
        head = repo.branch_head(project, default) or push.after

        def fail(problem: str) -> None:
            repo.set_commit_status(
                project, push.after, name=APPLY_STATUS, state="failed", description=problem
            )

        try:
            # The team's playbook (see team_playbook), read with this run's client at the head.
            playbook = repository_playbook(repo, project, head) or load_playbook(settings.playbook)
        except PlaybookError:
            fail("playbook.yaml is invalid: no launch runs until it is fixed")
            raise
        started: dict[str, str] = {}
        invalid: dict[str, list[str]] = {}
        cancelled: dict[str, str] = {}
        checked = []
        for path in affected.run:
            raw = repo.read(project, path, head)
            if raw is None:
                logger.info("%s is gone at %s: the push that removed it cancels it", path, head[:8])
                continue
            checked.append(check_file(path, raw, playbook))
        gone = []
        for path in affected.cancel:
            if repo.read(project, path, head) is not None:
                continue  # added back since
            raw = repo.read(project, path, push.before)
            try:
                request = parse_launch_file(raw or b"", path)
            except InputError:
                logger.warning("%s was deleted and cannot be read: no launch to cancel", path)
                continue
            gone.append(LaunchPreview(path, request, cancelled=True))
        decided = same_slugs([*checked, *gone])
        for lp in decided:
            if lp.problems:
                invalid[lp.path] = list(lp.problems)
                logger.error("%s is not valid: %s", lp.path, "; ".join(lp.problems))
            elif lp.request is not None and not lp.cancelled:
                key = f"tminus:{project}:{push.after}:{lp.path}"
                started[lp.path] = start_launch(lp.request, key)
                logger.info(
                    "%s: launch %s started (run %s)", lp.path, lp.request.slug, started[lp.path]
                )
        cancel = [lp for lp in decided if lp.cancelled and lp.request]
        if cancel:
            with closing(build_tracker(settings)) as tracker:
                for lp in cancel:
                    assert lp.request is not None
                    reason = f"{lp.path} was deleted from {project} in {push.after[:8]}"
                    result = cancel_launch(tracker, lp.request, reason)
                    cancelled[lp.path] = result.outcome.value
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
