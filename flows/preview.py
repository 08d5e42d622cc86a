"""The preview flows: what merging a merge request in the launches repository would change.

``preview`` (started by a ``gitlab.merge_request.*`` event from the webhook receiver) reads the
merge request as GitLab has it now, finds the launch files it affects (a changed
``playbook.yaml`` affects every launch file), dry-runs each one with the launch flow's own code
against GitLab, the launch calendar and the pages, and keeps one comment on the merge request
up to date (found again by its marker) plus a ``tminus/preview`` commit status on its head:
failed while a launch file (or the playbook) is invalid, so a project that requires passing
pipelines cannot merge it by accident. Nothing else is written.

``preview_files`` does the same for local files (``tminus preview FILE...``).

No ``from __future__ import annotations``: deployment runs validate parameters against the
flow's signature (see flows/launch.py).
"""

from contextlib import AbstractContextManager, closing
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from tminus.domain.planner import check_request
from tminus.domain.playbook import Playbook, parse_playbook_file
from tminus.domain.preview import (
    PREVIEW_MARKER,
    STATUS_NAME,
    LaunchPreview,
    Preview,
    preview_markdown,
    same_slugs,
)
from tminus.domain.repository import (
    LAUNCHES_FOLDER,
    MAX_LAUNCHES_PER_CHANGE,
    PLAYBOOK_FILE,
    MergeRequestChange,
    affected_launches,
)
from tminus.domain.request import parse_launch_file
from tminus.errors import (
    InputError,
    LaunchFileError,
    LaunchIncomplete,
    PlaybookError,
    TminusError,
)
from tminus.flows.launch import run_launch
from tminus.integrations.files import load_playbook, read_bounded
from tminus.integrations.gitlab_repo import (
    GitLabRepository,
    build_repository,
    check_launches_repo,
    repository_playbook,
    team_playbook,
)
from tminus.settings import Settings, load_settings
from tminus.tasks.locks import launch_lock


def dry_run_file(
    path: str, raw: bytes | None, playbook: Playbook, settings: Settings
) -> LaunchPreview:
    """One launch file's preview: its problems if it is invalid, else its dry run."""
    checked = check_file(path, raw, playbook)
    if checked.request is None:
        return checked
    request = checked.request
    try:
        report = run_launch(request, playbook, settings, dry_run=True, artifacts=False)
    except LaunchIncomplete as exc:
        report = exc.report
    except TminusError as exc:  # GitLab refused the project or an owner, say
        return LaunchPreview(path, request, problems=(str(exc),))
    return LaunchPreview(path, request, report.results, warnings=report.warnings)


def check_file(path: str, raw: bytes | None, playbook: Playbook) -> LaunchPreview:
    """A launch file checked (parsed and against the playbook), not dry-run."""
    if raw is None:
        return LaunchPreview(path, problems=("the file could not be read",))
    try:
        request = parse_launch_file(raw, path)
        check_request(request, playbook, source=path)
    except InputError as exc:
        return LaunchPreview(path, problems=tuple(exc.problems))
    return LaunchPreview(path, request)


def preview_change(
    repo: GitLabRepository,
    project: str,
    base: str,
    head: str,
    settings: Settings,
    source: str,
) -> Preview:
    """What merging ``head`` into ``base`` would change (reads only)."""
    changes = repo.changes(project, base, head)
    launch_files = repo.files(project, head, LAUNCHES_FOLDER)
    affected = affected_launches(changes, launch_files)
    notes: list[str] = []
    playbook_problems: tuple[str, ...] = ()
    playbook: Playbook | None = None
    if affected.playbook_changed:
        raw = repo.read(project, PLAYBOOK_FILE, head)
        if raw is None:
            notes.append(
                "playbook.yaml is deleted: launches would use TMINUS_PLAYBOOK or the default"
            )
            playbook = load_playbook(settings.playbook)
        else:
            try:
                playbook = parse_playbook_file(raw, PLAYBOOK_FILE)
            except InputError as exc:
                playbook_problems = tuple(exc.problems)
    elif not playbook_problems:
        # Unchanged here: the playbook the merge would meet is the target branch's.
        playbook = repository_playbook(repo, project, base) or load_playbook(settings.playbook)
    run = list(affected.run)
    launches: list[LaunchPreview] = []
    if playbook is not None:
        # Every file is checked; the dry runs (the slow part) stop at the limit.
        for n, path in enumerate(run):
            raw = repo.read(project, path, head)
            if n < MAX_LAUNCHES_PER_CHANGE:
                launches.append(dry_run_file(path, raw, playbook, settings))
            else:
                launches.append(check_file(path, raw, playbook))
        if len(run) > MAX_LAUNCHES_PER_CHANGE:
            notes.append(
                f"{len(run)} launch files are affected; all are checked, the first "
                f"{MAX_LAUNCHES_PER_CHANGE} are dry-run (the rest show no changes)"
            )
    for path in affected.cancel:
        raw = repo.read(project, path, base)
        try:
            request = parse_launch_file(raw, path) if raw is not None else None
        except InputError:
            request = None
        launches.append(LaunchPreview(path, request, cancelled=True))
    return Preview(
        source,
        tuple(same_slugs(launches)),
        affected.playbook_changed,
        playbook_problems,
        tuple(notes),
    )


def preview_lock(project_id: int, iid: int) -> AbstractContextManager[object]:
    """One preview of a merge request at a time: two runs would both find no comment and
    both create one, or an older head's would overwrite a newer one's."""
    return launch_lock(f"mr-preview-{project_id}-{iid}")


@flow(name="preview", task_runner=ThreadPoolTaskRunner(max_workers=40))  # type: ignore[arg-type]
def preview(merge_request: MergeRequestChange) -> dict[str, str]:
    """Preview what merging a merge request in the launches repository would change: one
    comment on the merge request, updated in place on every push, and a `tminus/preview`
    commit status on its head: pending while the preview runs, failed while a launch file or
    the playbook is invalid (or the preview itself failed), success otherwise. A merge request
    into another branch than the default one is not previewed (merging it applies nothing).
    Writes nothing else.
    """
    logger = get_run_logger()
    settings = load_settings()
    project = merge_request.project.path_with_namespace
    check_launches_repo(project, settings)
    with (
        closing(build_repository(settings)) as repo,
        preview_lock(merge_request.project.id, merge_request.iid),
    ):
        mr = repo.merge_request(project, merge_request.iid)
        if mr.state != "opened":
            logger.info("!%d is %s: nothing to preview", mr.iid, mr.state)
            return {"merge_request": mr.web_url, "status": f"skipped: {mr.state}"}
        default = merge_request.project.default_branch or repo.default_branch(project)
        if mr.target_branch != default:
            logger.info(
                "!%d targets %s, not %s: merging it applies nothing",
                mr.iid,
                mr.target_branch,
                default,
            )
            return {"merge_request": mr.web_url, "status": f"skipped: targets {mr.target_branch}"}
        # GitLab's view now, not the event's: a late delivery previews the newest head.
        head = mr.head_sha
        # A fork's commit gets its status in the fork, on its branch.
        status_project: str | int = (
            project if mr.source_project_id == mr.target_project_id else mr.source_project_id
        )

        def status(state: str, description: str, target_url: str | None = None) -> None:
            repo.set_commit_status(
                status_project,
                head,
                name=STATUS_NAME,
                state=state,
                description=description,
                target_url=target_url,
                ref=mr.source_branch,
            )

        if repo.commit_status(status_project, head, STATUS_NAME) is None:
            # A new head: no merge before its preview says so (a repeat writes nothing).
            status("pending", "tminus is previewing what merging would change")
        try:
            result = preview_change(
                repo, project, mr.target_branch, head, settings, f"!{mr.iid} at {head[:8]}"
            )
            existing = repo.find_mr_note(project, mr.iid, PREVIEW_MARKER)
            if not result.launches and not result.playbook_changed and existing is None:
                logger.info("!%d changes no launch file and no playbook: no comment", mr.iid)
                status("success", "no launch file or playbook changed")
                return {"merge_request": mr.web_url, "status": "success", "head": head}
            if repo.merge_request(project, mr.iid).head_sha != head:
                logger.info("!%d moved on while previewing: the next preview says it", mr.iid)
                return {"merge_request": mr.web_url, "status": "superseded", "head": head}
            body = preview_markdown(result)
            what, note_id = repo.write_mr_note(project, mr.iid, PREVIEW_MARKER, body, existing)
            state, description = result.status()
            status(state, description, f"{mr.web_url}#note_{note_id}")
        except BaseException:
            status("failed", "the tminus preview failed; see its Prefect run")
            raise
    create_markdown_artifact(
        key=f"preview-mr-{mr.iid}", markdown=body, description=f"Plan preview of {mr.web_url}"
    )
    logger.info("Preview of !%d: comment %s, status %s (%s)", mr.iid, what, state, description)
    return {"merge_request": mr.web_url, "status": state, "comment": what, "head": head}


@flow(name="preview-files", task_runner=ThreadPoolTaskRunner(max_workers=40))  # type: ignore[arg-type]
def preview_files(files: list[str], playbook: str | None = None) -> dict[str, Any]:
    """The preview of local launch files (``tminus preview``): ``markdown`` as a merge request
    would get it, and ``ok`` (no file invalid, no dry run failed). ``playbook`` is a playbook
    file to preview with (default: the team's)."""
    settings = load_settings()
    chosen = (
        parse_playbook_file(read_bounded(Path(playbook), PlaybookError), playbook)
        if playbook
        else team_playbook(settings)
    )
    launches = [
        dry_run_file(path, read_bounded(Path(path), LaunchFileError), chosen, settings)
        for path in files
    ]
    result = Preview("local files", tuple(same_slugs(launches)), bool(playbook))
    return {"markdown": preview_markdown(result), "ok": result.ok}
