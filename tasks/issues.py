"""GitLab issues as Prefect tasks: observe (read only), apply one change per task run; the
diff between them is pure (``tminus.domain.issues``). No caching and no Prefect retries: each
GitLab call has its retries in the adapter (``integrations.retry``).

Nothing here is cached by Prefect on purpose: idempotency comes from looking each issue up in
GitLab by its key, so an issue someone deleted or edited is noticed on the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import cast

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from tminus.domain import markers
from tminus.domain.issues import (
    BLOCKED_LABEL,
    CANCELLED_LABEL,
    DROPPED_LABEL,
    BlockIssue,
    CreateIssue,
    CreateLabels,
    DropIssue,
    IssueChange,
    IssueState,
    IssueTracker,
    IssueWrite,
    LinkIssues,
    UpdateIssue,
    block_change,
    drop_changes,
    issue_change,
    label_change,
    link_change,
)
from tminus.domain.plan import LATE_WORK, IssueSpec, Plan, key_marker_prefix
from tminus.domain.request import LaunchRequest
from tminus.domain.results import ActionResult, Outcome
from tminus.domain.retro import as_written, fill_for
from tminus.errors import PermanentError, TminusError
from tminus.tasks.apply import apply_changes, each


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:  # called with .fn() outside a run
        return logging.getLogger("tminus")


@dataclass(frozen=True)
class GitLabView:
    """What the launch's check read from GitLab, before anything is written."""

    user_ids: dict[str, int]  # every person named: username as written -> GitLab user id
    issues: dict[str, IssueState]  # the launch's issues, by key
    labels: set[str] | TminusError  # the project's labels (unreadable is not fatal)


@task(name="check-gitlab", cache_policy=NO_CACHE)
def check_gitlab(tracker: IssueTracker, plan: Plan) -> GitLabView:
    """Read-only pre-flight and observation: the project exists, the launch's issues and the
    project's labels as GitLab has them, and every person named is a GitLab user. Fails
    before anything is written.

    The project, the issues and the labels are read at once. A person already assigned one
    of the launch's issues is known from it (GitLab's answer names assignees with their ids),
    so only the others are looked up, one call each: a re-run looks up nobody the launch
    assigns."""
    request = plan.request
    people = {"owner": request.owner, **{f"team.{r}": u for r, u in request.team.items()}}

    def read(what: str) -> object:
        if what == "project":
            return tracker.check_project(request.project)
        if what == "issues":
            return observe_launch_issues.fn(tracker, plan)
        try:
            return observe_labels.fn(tracker, request.project)
        except TminusError as exc:  # GitLab also creates the labels an issue names
            return exc

    # An unusable project is the error raised, as it comes first.
    _, found, listed = each(read, ["project", "issues", "labels"])
    issues = cast(dict[str, IssueState], found)
    labels = cast(set[str] | TminusError, listed)
    known = {
        name.lower(): uid
        for state in issues.values()
        for name, uid in zip(state.assignees, state.assignee_ids, strict=False)
    }
    unknown = [n for n in dict.fromkeys(people.values()) if n.lower() not in known]
    looked_up = dict(zip(unknown, each(tracker.user_id, unknown), strict=True))
    ids: dict[str, int] = {}
    missing = []
    for field, username in people.items():
        uid = known.get(username.lower(), looked_up.get(username))
        if uid is None:
            missing.append(f"{field}: GitLab has no user {username!r}")
        else:
            ids[username] = uid
    if missing:
        raise PermanentError(
            "GitLab",
            "; ".join(missing) + "; fix the username in the launch request",
            status=404,
            resource="users",
        )
    return GitLabView(ids, issues, labels)


@task(name="observe-launch-issues", cache_policy=NO_CACHE)
def observe_launch_issues(tracker: IssueTracker, plan: Plan) -> dict[str, IssueState]:
    """Every issue GitLab has for this launch, by key (oldest wins if a key appears twice)."""
    found: dict[str, IssueState] = {}
    for state in tracker.find_issues(
        plan.request.project, plan.request.launch_label, plan.launch_marker
    ):
        if state.key is None or not state.key.startswith(f"{plan.request.slug}/"):
            continue  # another launch's issue that carries this launch's label
        if state.key in found:
            _logger().warning(
                "Issues %s and %s both carry key %s; keeping the older one",
                found[state.key].web_url,
                state.web_url,
                state.key,
            )
            continue
        found[state.key] = state
    return found


@task(name="observe-labels", cache_policy=NO_CACHE)
def observe_labels(tracker: IssueTracker, project: str) -> set[str]:
    """The project's label names (read only)."""
    return tracker.project_labels(project)


@task(name="observe-links", cache_policy=NO_CACHE)
def observe_links(tracker: IssueTracker, project: str, iid: int) -> set[int]:
    """The issues linked to ``iid`` (read only)."""
    return tracker.linked_iids(project, iid)


@task(name="observe-blockers", cache_policy=NO_CACHE)
def observe_blockers(
    tracker: IssueTracker, project: str, iids: list[int], all_links: Sequence[int] = ()
) -> dict[int, set[int]]:
    """The issues linked as blocking each of ``iids`` (read only): the open ones, read at once;
    for those also in ``all_links`` every blocking link, read one issue at a time."""
    found = tracker.open_blockers(project, [i for i in iids if i not in all_links])
    every = each(lambda iid: tracker.blocker_iids(project, iid), all_links)
    return found | dict(zip(all_links, every, strict=True))


@task(name="apply-issue-change", task_run_name="{change.key}", cache_policy=NO_CACHE)
def apply_issue_change(tracker: IssueTracker, project: str, change: IssueChange) -> ActionResult:
    """Apply one change to GitLab and return its row (with the issue's URL and iid)."""
    row = change.planned()
    match change:
        case CreateLabels(missing=missing):
            tracker.ensure_labels(project, list(missing))
        case CreateIssue(spec=spec, write=write):
            state = tracker.create_issue(project, write, spec.labels)
            row.url, row.iid = state.web_url, state.iid
        case UpdateIssue(existing=existing, write=write):
            tracker.update_issue(project, existing.iid, write)
        case DropIssue(existing=existing, write=write) if write is not None:
            # Note first, so a closed issue always says why; GitLab is asked first, because an
            # earlier attempt or run may have posted it and then failed to close the issue.
            if tracker.find_note(project, existing.iid, change.note) is None:
                tracker.add_note(project, existing.iid, change.note)
            tracker.update_issue(project, existing.iid, write)
        case LinkIssues(tracking_iid=tracking_iid, missing=missing):
            # One change, one task run; its links are made at once (no order between them).
            each(lambda iid: tracker.link_issues(project, tracking_iid, iid), missing)
        case BlockIssue(iid=iid, link=link, unlabel=unlabel):
            if unlabel:
                tracker.update_issue(project, iid, IssueWrite(remove_labels=(BLOCKED_LABEL,)))
            linked = each(lambda blocker: tracker.block_issue(project, blocker, iid), link)
            if not all(linked):
                # GitLab Free has no blocking links: the label shows it instead.
                tracker.update_issue(project, iid, IssueWrite(add_labels=(BLOCKED_LABEL,)))
                row.outcome = Outcome.updated
                row.detail = (
                    f"blocked by {', '.join(f'#{b}' for b in change.blockers)}: label "
                    f"{BLOCKED_LABEL} (this GitLab has no blocking links)"
                )
    return row


def _failed_row(key: str, kind: str, title: str, exc: TminusError) -> ActionResult:
    return ActionResult(key=key, kind=kind, title=title, outcome=Outcome.failed, detail=str(exc))


def reconcile_issues(
    tracker: IssueTracker,
    plan: Plan,
    seen: GitLabView,
    dry_run: bool = False,
    on_tracking: Callable[[ActionResult], None] | None = None,
) -> list[ActionResult]:
    """Bring GitLab to the plan, observe -> diff -> apply, in rounds because later writes
    depend on earlier ones: the labels (GitLab gives a label an issue names but the project
    lacks its default color, so ours must exist first); the activity and sister issues; the
    retrospective (it lists the late ones); then the tracking issue (its checklist links them
    by number) with the drops; then the links. ``on_tracking`` is called with the tracking
    issue's row as soon as it is written, before the links (what needs only the tracking
    issue can start meanwhile)."""
    project = plan.request.project
    slug = plan.request.slug
    existing = seen.issues

    def change(spec: IssueSpec, refs: dict[str, int], late: str = "") -> IssueChange:
        assignee = seen.user_ids.get(spec.assignee) if spec.assignee else None
        return issue_change(
            spec, existing.get(spec.key), refs=refs, assignee_id=assignee, late_work=late
        )

    rows: list[ActionResult] = []
    refs: dict[str, int] = {}
    try:
        if isinstance(seen.labels, TminusError):
            raise seen.labels
        labels = label_change(plan, seen.labels)
    except TminusError as exc:
        # Not fatal: GitLab also creates the labels an issue names (without our colors).
        rows.append(_failed_row(f"{slug}/labels", "labels", "Labels", exc))
    else:
        rows += apply_changes(apply_issue_change, [labels], dry_run, tracker, project).results()
    # An issue that waits for others names them (#12): they are written in an earlier round.
    # The issue listing the late work (the retrospective) comes after all the others, so that
    # it lists them as this run leaves them.
    later = [spec for spec in plan.issues if LATE_WORK in spec.description]
    first = tuple(spec for spec in plan.issues if spec not in later)
    for level in dependency_levels(first):
        batch: list[IssueChange] = [change(spec, refs) for spec in level]
        done = apply_changes(apply_issue_change, batch, dry_run, tracker, project).results()
        rows += done
        keys = {spec.key for spec in level}
        refs |= {r.key: r.iid for r in done if r.key in keys and r.iid is not None}
    if later:
        work = as_written(plan.issues, existing, refs)
        retro = [change(spec, refs, fill_for(spec, work, plan.today)) for spec in later]
        done = apply_changes(apply_issue_change, retro, dry_run, tracker, project).results()
        rows += done
        refs |= {r.key: r.iid for r in done if r.iid is not None}

    second = [change(plan.tracking, refs), *drop_changes(plan, existing)]
    done = apply_changes(apply_issue_change, second, dry_run, tracker, project).results()
    rows += done
    tracking = done[0]
    if on_tracking is not None:
        on_tracking(tracking)
    if tracking.iid is not None and refs:
        try:
            # A tracking issue this run just created has no links yet: nothing to read.
            created = tracking.outcome is Outcome.created and not dry_run
            linked = set() if created else observe_links(tracker, project, tracking.iid)
        except TminusError as exc:
            title = "Links to the tracking issue"
            rows.append(_failed_row(f"{plan.tracking.key}/links", "links", title, exc))
        else:
            links = link_change(tracking.iid, list(refs.values()), linked)
            rows += apply_changes(apply_issue_change, [links], dry_run, tracker, project).results()
    rows += _block_rows(tracker, plan, existing, rows, dry_run)
    return rows


def dependency_levels(specs: tuple[IssueSpec, ...]) -> list[list[IssueSpec]]:
    """``specs`` in rounds: first those that wait for none of them, then those that wait only
    for earlier rounds, and so on (the playbook has no cycles)."""
    keys = {s.key for s in specs}
    level: dict[str, int] = {}

    def depth(spec: IssueSpec) -> int:
        if spec.key not in level:
            deps = [by_key[d] for d in spec.depends_on if d in keys]
            level[spec.key] = 1 + max((depth(d) for d in deps), default=-1)
        return level[spec.key]

    by_key = {s.key: s for s in specs}
    rounds: list[list[IssueSpec]] = []
    for spec in specs:
        n = depth(spec)
        rounds += [[] for _ in range(n + 1 - len(rounds))]
        rounds[n].append(spec)
    return rounds


def _block_rows(
    tracker: IssueTracker,
    plan: Plan,
    existing: dict[str, IssueState],
    rows: list[ActionResult],
    dry_run: bool,
) -> list[ActionResult]:
    """Show which issues wait for open ones: blocking links, or the label where GitLab has none.
    Reads the blocking links only of issues that existed and may need one."""
    waiting = [spec for spec in plan.issues if spec.depends_on]
    if not waiting:
        return []
    after: dict[str, IssueState] = {}  # the launch's issues as this run leaves them
    for row in rows:
        spec = next((s for s in plan.issues if s.key == row.key), None)
        if spec is None or row.iid is None:
            continue
        state = existing.get(spec.key)
        if state is None:  # created by this run
            state = IssueState(
                row.iid, row.url or "", spec.title, "", spec.labels, spec.due_date, (), "opened"
            )
        elif DROPPED_LABEL in state.labels:  # reopened by this run
            state = replace(state, state="opened")
        after[spec.key] = state
    waiting = [spec for spec in waiting if spec.key in after]

    def needs_read(spec: IssueSpec) -> bool:
        state = after[spec.key]
        if spec.key not in existing or BLOCKED_LABEL in state.labels or state.state != "opened":
            return False  # nothing to read: new, labelled, or closed
        return any(after.get(d, state).state == "opened" for d in spec.depends_on)

    def reopens(spec: IssueSpec) -> bool:
        """A dependency of ``spec`` is closed in GitLab and this run reopens it (a dry run
        only says it would)."""
        return any(
            d in existing and existing[d].state != "opened" and after[d].state == "opened"
            for d in spec.depends_on
            if d in after
        )

    # One read for all of them (GitLab's GraphQL API), which lists only open blockers: only
    # open dependencies are linked. Where this run reopens a dependency, its link is read the
    # REST way, as GitLab may not show it open yet (rare: a tier raised again).
    reading = [spec for spec in waiting if needs_read(spec)]
    to_read = [after[spec.key].iid for spec in reading]
    found: dict[int, set[int]] | TminusError = {}
    if to_read:
        all_links = [after[spec.key].iid for spec in reading if reopens(spec)]
        try:
            found = observe_blockers(tracker, plan.request.project, to_read, all_links)
        except TminusError as exc:
            found = exc

    out: list[ActionResult] = []
    changes: list[IssueChange] = []
    for spec in waiting:
        state = after[spec.key]
        if isinstance(found, TminusError) and state.iid in to_read:
            row = BlockIssue(spec.key, spec.title, state.iid, None, (), ()).planned()
            out.append(replace(row, outcome=Outcome.failed, detail=str(found)))
        else:
            linked = found.get(state.iid, set()) if isinstance(found, dict) else set()
            changes.append(block_change(spec, state, after, linked))
    applied = apply_changes(apply_issue_change, changes, dry_run, tracker, plan.request.project)
    return out + applied.results()


CANCEL_NOTE_MARKER = markers.CANCELLED


@task(name="cancel-launch", cache_policy=NO_CACHE)
def cancel_launch(tracker: IssueTracker, request: LaunchRequest, reason: str) -> ActionResult:
    """Mark a launch cancelled on its tracking issue (label and one comment); delete nothing."""
    key = f"{request.slug}/tracking"
    found = next(
        (
            s
            for s in tracker.find_issues(
                request.project, request.launch_label, key_marker_prefix(request.slug)
            )
            if s.key == key
        ),
        None,
    )
    result = ActionResult(
        key=key,
        kind="tracking",
        title=f"Cancel launch {request.slug}",
        outcome=Outcome.skipped,
        detail="no tracking issue: nothing to cancel",
    )
    if found is None:
        return result
    result.url, result.iid = found.web_url, found.iid
    changed = False
    if tracker.find_note(request.project, found.iid, CANCEL_NOTE_MARKER) is None:
        tracker.add_note(
            request.project,
            found.iid,
            f"<!-- {CANCEL_NOTE_MARKER} -->\ntminus: launch "
            f"cancelled: {reason}. Nothing was deleted; re-run the launch to resume it.",
        )
        changed = True
    if CANCELLED_LABEL not in found.labels:
        tracker.update_issue(request.project, found.iid, IssueWrite(add_labels=(CANCELLED_LABEL,)))
        changed = True
    result.outcome = Outcome.updated if changed else Outcome.unchanged
    result.detail = "marked cancelled" if changed else "already cancelled"
    return result
