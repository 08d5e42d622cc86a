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

from contextlib import closing
from pathlib import Path

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
from tminus.integrations.files import read_bounded
from tminus.integrations.gitlab_repo import (
    GitLabRepository,
    build_repository,
    check_launches_repo,
    repository_playbook,
    team_playbook,
)
from tminus.settings import Settings, load_settings


def dry_run_file(
    path: str, raw: bytes | None, playbook: Playbook, settings: Settings
) -> LaunchPreview:
    """One launch file's preview: its problems if it is invalid, else its dry run."""
    if raw is None:
        return LaunchPreview(path, problems=("the file could not be read",))
    try:
        request = parse_launch_file(raw, path)
        check_request(request, playbook, source=path)
    except InputError as exc:
        return LaunchPreview(path, problems=tuple(exc.problems))
    try:
        report = run_launch(request, playbook, settings, dry_run=True, artifacts=False)
    except LaunchIncomplete as exc:
        report = exc.report
    except TminusError as exc:  # GitLab refused the project or an owner, say
        return LaunchPreview(path, request, problems=(str(exc),))
    return LaunchPreview(path, request, report.results, warnings=report.warnings)


def _same_slugs(launches: list[LaunchPreview]) -> list[LaunchPreview]:
    """Two files for one launch would overwrite each other's issues: both are refused."""
    paths: dict[str, list[str]] = {}
    for lp in launches:
        if lp.request is not None and not lp.cancelled:
            paths.setdefault(lp.request.slug, []).append(lp.path)
    out = []
    for lp in launches:
        slug = lp.request.slug if lp.request is not None and not lp.cancelled else None
        same = paths.get(slug, []) if slug else []
        if len(same) > 1:
            problem = f"slug {slug!r} is used by {', '.join(same)}; give each its own slug"
            lp = LaunchPreview(lp.path, lp.request, problems=(*lp.problems, problem))
        out.append(lp)
    return out


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
        try:
            playbook = parse_playbook_file(raw, PLAYBOOK_FILE) if raw is not None else None
        except InputError as exc:
            playbook_problems = tuple(exc.problems)
        if raw is None:
            notes.append(
                "playbook.yaml is deleted: launches would use TMINUS_PLAYBOOK or the default"
            )
    if playbook is None and not playbook_problems:
        playbook = repository_playbook(repo, project, head) or team_playbook(settings)
    run = list(affected.run)
    if len(run) > MAX_LAUNCHES_PER_CHANGE:
        notes.append(
            f"{len(run)} launch files are affected; the first {MAX_LAUNCHES_PER_CHANGE} are "
            "previewed (split the merge request to see the rest)"
        )
        run = run[:MAX_LAUNCHES_PER_CHANGE]
    launches: list[LaunchPreview] = []
    if playbook is not None:
        for path in run:
            launches.append(dry_run_file(path, repo.read(project, path, head), playbook, settings))
    for path in affected.cancel:
        raw = repo.read(project, path, base)
        try:
            request = parse_launch_file(raw, path) if raw is not None else None
        except InputError:
            request = None
        launches.append(LaunchPreview(path, request, cancelled=True))
    return Preview(
        source,
        tuple(_same_slugs(launches)),
        affected.playbook_changed,
        playbook_problems,
        tuple(notes),
    )


@flow(name="preview", task_runner=ThreadPoolTaskRunner(max_workers=40))  # type: ignore[arg-type]
def preview(merge_request: MergeRequestChange) -> dict[str, str]:
    """Preview what merging a merge request in the launches repository would change: one
    comment on the merge request, updated in place on every push, and a `tminus/preview`
    commit status (failed while a launch file or the playbook is invalid). Writes nothing else.
    """
    logger = get_run_logger()
    settings = load_settings()
    project = merge_request.project.path_with_namespace
    check_launches_repo(project, settings)
    with closing(build_repository(settings)) as repo:
        mr = repo.merge_request(project, merge_request.iid)
        if mr.state != "opened":
            logger.info("!%d is %s: nothing to preview", mr.iid, mr.state)
            return {"merge_request": mr.web_url, "status": f"skipped: {mr.state}"}
        # GitLab's view now, not the event's: a late delivery previews the newest head.
        head = mr.head_sha
        result = preview_change(
            repo, project, mr.target_branch, head, settings, f"!{mr.iid} at {head[:8]}"
        )
        existing = repo.find_mr_note(project, mr.iid, PREVIEW_MARKER)
        if not result.launches and not result.playbook_changed and existing is None:
            logger.info("!%d changes no launch file and no playbook: no preview", mr.iid)
            return {"merge_request": mr.web_url, "status": "no launch files"}
        body = preview_markdown(result)
        what, note_id = repo.write_mr_note(project, mr.iid, PREVIEW_MARKER, body)
        state, description = result.status()
        repo.set_commit_status(
            project,
            head,
            name=STATUS_NAME,
            state=state,
            description=description,
            target_url=f"{mr.web_url}#note_{note_id}",
        )
    create_markdown_artifact(
        key=f"preview-mr-{mr.iid}", markdown=body, description=f"Plan preview of {mr.web_url}"
    )
    logger.info("Preview of !%d: comment %s, status %s (%s)", mr.iid, what, state, description)
    return {"merge_request": mr.web_url, "status": state, "comment": what, "head": head}


@flow(name="preview-files", task_runner=ThreadPoolTaskRunner(max_workers=40))  # type: ignore[arg-type]
def preview_files(files: list[str], playbook: str | None = None) -> str:
    """The preview of local launch files (``tminus preview``): markdown, as a merge request
    would get it. ``playbook`` is a playbook file to preview with (default: the team's)."""
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
    return preview_markdown(Preview("local files", tuple(_same_slugs(launches)), bool(playbook)))
