"""The checklist audit flow: readiness of every open launch, on a schedule.

No ``from __future__ import annotations`` (deployment runs validate parameters against the
flow's signature).
"""

from collections import deque
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from tminus.domain.answers import sister_unanswered
from tminus.domain.audit import (
    AUDIT_NOTE_MARKER,
    DONE_MARKER,
    STATUS_LABEL_PREFIX,
    STATUSES,
    audit_launch,
    audit_note,
    done_note,
    reminder_body,
    reminder_marker,
    reminders,
)
from tminus.domain.calendar import LaunchCalendar, diff_calendar
from tminus.domain.issues import (
    CANCELLED_LABEL,
    CreateIssue,
    IssueState,
    IssueTracker,
    IssueWrite,
    issue_change,
)
from tminus.domain.plan import (
    LATE_WORK,
    IssueSpec,
    Plan,
    key_marker_prefix,
    request_from_description,
)
from tminus.domain.planner import plan_launch
from tminus.domain.playbook import Playbook
from tminus.domain.request import LaunchRequest
from tminus.domain.results import Outcome
from tminus.domain.retro import RETROSPECTIVE, as_written, fill_for, read_actuals
from tminus.errors import LockTimeout, TminusError
from tminus.integrations import malloc
from tminus.integrations.clients import connect
from tminus.integrations.gitlab_repo import team_playbook
from tminus.integrations.pages import PageReader
from tminus.settings import Settings, load_settings
from tminus.tasks.locks import launch_lock
from tminus.tasks.pages import KnownPages, run_page_checks

# How long the audit waits for a launch run writing the same launch before leaving its
# retrospective to the next audit.
AUDIT_LOCK_WAIT = 60.0

TRACKING_LABEL = "launch-issue::tracking"
WORKERS = 4
# Launches audited at once, plus a few queued: a batch holds this many task runs' futures
# (their parameters and results), not one per launch of the batch.
IN_FLIGHT = 2 * WORKERS
# Launches audited by one `audit-batch` subflow run. Prefect keeps a record of every task run
# of a flow run until the flow run ends (the run context links each result to its state; the
# task runner keeps a cancel event per task run; PrefectHQ/prefect#12668): in one flow run for
# every open launch that grew by about 15 KB of memory per launch. A subflow run per batch
# ends, and frees them, after its launches.
BATCH = 100


def keep_retrospective(
    tracker: IssueTracker,
    project: str,
    tracking: IssueState,
    spec: IssueSpec,
    plan: Plan,
    issues: list[IssueState],
) -> list[IssueState]:
    """From its due date, the retrospective exists and lists the late work GitLab shows:
    created (and linked to the tracking issue) when missing, its list updated when work
    closed since. Found by its key, so a re-run creates no second one. Returns ``issues``
    with the retrospective as written."""
    existing = next((i for i in issues if i.key == spec.key), None)
    uid = tracker.user_id(spec.assignee) if spec.assignee and existing is None else None
    # The late work as a launch run lists it: the planned issues, as GitLab has them.
    refs = {i.key: i.iid for i in issues if i.key}  # as a launch run fills them: no churn
    work = as_written(plan.issues, {i.key: i for i in issues if i.key}, refs)
    late = fill_for(spec, work, plan.today)
    change = issue_change(spec, existing, refs=refs, assignee_id=uid, late_work=late)
    if isinstance(change, CreateIssue):
        written = tracker.create_issue(project, change.write, spec.labels)
        tracker.link_issues(project, tracking.iid, written.iid)
        return [*issues, written]
    if change.write.is_empty():
        return issues
    written = tracker.update_issue(project, change.existing.iid, change.write)
    return [written if i.iid == written.iid else i for i in issues]


CLOSE = "_close"  # a row's private field: the tracking issue to close, and its note


def close_launches(tracker: IssueTracker, rows: list[dict[str, Any]]) -> None:
    """Close the tracking issues whose retrospective closed, once: closed first, then the note
    says so (a close that failed is tried again by the next audit; a tracking issue reopened
    after the note stays open)."""
    for row in rows:
        intent = row.pop(CLOSE, None)
        if intent is None:
            continue
        project, iid, note = intent
        try:
            tracker.update_issue(project, iid, IssueWrite(state_event="close"))
            tracker.add_note(project, iid, note)
        except TminusError as exc:
            row["detail"] = f"closing the tracking issue failed: {exc}"
        else:
            row["closed"] = True


def observe(tracker: IssueTracker, project: str, request: LaunchRequest) -> list[IssueState]:
    """The launch's issues as GitLab has them (found by label and key marker)."""
    return [
        i
        for i in tracker.find_issues(project, request.launch_label, key_marker_prefix(request.slug))
        if i.key and i.key.startswith(f"{request.slug}/")
    ]


@task(
    name="audit-launch",
    task_run_name="audit {tracking.web_url}",
    cache_policy=NO_CACHE,
)
def audit_one(
    tracker: IssueTracker,
    calendar: LaunchCalendar,
    pages: PageReader,
    settings: Settings,
    playbook: Playbook,
    project: str,
    tracking: IssueState,
    today_iso: str,
) -> dict[str, Any]:
    """Audit one launch; update its audit note and status label; remind owners of overdue work
    (at most once a day per issue). Returns a row of the audit table."""
    today = date.fromisoformat(today_iso)
    request = request_from_description(tracking.description)
    if request is None:
        return {
            "launch": tracking.web_url,
            "status": "unknown",
            "detail": "tracking issue has no launch record (created by another tool?)",
        }
    plan = plan_launch(request, playbook, today)
    issues = observe(tracker, project, request)

    # The retrospective is the issue listing the late work, as the launch run picks it.
    retro = next((s for s in plan.issues if LATE_WORK in s.description), None)
    if retro is not None and retro.due_date is not None and today >= retro.due_date:
        # Under the launch lock, observed again inside it: a launch run writing the same
        # launch meanwhile would otherwise create a second one. A launch holding it long
        # (its writes, not an approval wait: that runs unlocked) leaves this to the next audit.
        try:
            with launch_lock(request.slug, timeout=AUDIT_LOCK_WAIT):
                issues = keep_retrospective(
                    tracker, project, tracking, retro, plan, observe(tracker, project, request)
                )
        except LockTimeout:
            get_run_logger().warning("%s is being written: its retrospective waits", request.slug)
    retro_key = retro.key if retro else f"{request.slug}/activity/{RETROSPECTIVE}"
    retro_state = next((i for i in issues if i.key == retro_key), None)
    actuals = read_actuals(retro_state.description, request.success_metrics) if retro_state else {}

    pages_failing: list[str] = []
    pages_total = 0
    if plan.checks:
        page_results = run_page_checks(pages, plan, settings)
        pages_total = len(page_results)
        pages_failing = [
            f"{r.title}: {r.detail}" for r in page_results if r.outcome is Outcome.failed
        ]
    calendar_drift = 0
    try:
        observed = calendar.observe(settings.calendar_id, request.slug)
        changes = diff_calendar(
            plan.calendar,
            observed,
            request.slug,
            skip_reason=calendar.skip_reason,
            sales_email=settings.sales_channel_email,
        )
        calendar_drift = sum(1 for c in changes if c.planned().outcome is not Outcome.unchanged)
    except TminusError as exc:  # the calendar being down must not stop the audit
        get_run_logger().warning("Calendar check of %s failed: %s", request.slug, exc)

    audit = audit_launch(
        request.slug,
        request.title,
        request.launch_date,
        issues,
        today,
        pages_total=pages_total,
        pages_failing=pages_failing,
        calendar_drift=calendar_drift,
        depends_on={s.key: s.depends_on for s in plan.issues if s.depends_on},
        unanswered=sister_unanswered(plan, issues),
        retro_key=retro_key,
        metrics=request.success_metrics,
        actuals=actuals,
    )
    body = audit_note(audit, request.owner)
    found = tracker.find_note(project, tracking.iid, AUDIT_NOTE_MARKER)
    if found is None:
        tracker.add_note(project, tracking.iid, body)
    elif found[1].strip() != body.strip():
        tracker.update_note(project, tracking.iid, found[0], body)

    want = f"{STATUS_LABEL_PREFIX}{audit.status}"
    stale = tuple(
        f"{STATUS_LABEL_PREFIX}{s}"
        for s in STATUSES
        if s != audit.status and f"{STATUS_LABEL_PREFIX}{s}" in tracking.labels
    )
    if want not in tracking.labels or stale:
        tracker.update_issue(
            project,
            tracking.iid,
            IssueWrite(
                add_labels=(want,) if want not in tracking.labels else (), remove_labels=stale
            ),
        )

    reminded = 0
    for item in reminders(audit):
        if tracker.find_note(project, item.issue.iid, reminder_marker(today)) is None:
            tracker.add_note(project, item.issue.iid, reminder_body(item, request.owner, today))
            reminded += 1

    # Closed after every page of tracking issues is read (``close_launches``): closing one
    # now would shift the pages still to be read, and skip launches.
    to_close = None
    if audit.close_tracking and tracker.find_note(project, tracking.iid, DONE_MARKER) is None:
        to_close = (project, tracking.iid, done_note(audit))
    return {
        CLOSE: to_close,
        "launch": request.slug,
        "title": request.title,
        "launch_date": str(request.launch_date),
        "status": audit.status,
        "readiness": audit.readiness,
        "done": f"{audit.done}/{audit.total}",
        "overdue": len(audit.overdue),
        "blocked": len(audit.blocked),
        "reminded": reminded,
        "pages_failing": len(audit.pages_failing),
        "calendar_drift": audit.calendar_drift,
        "unanswered": sum(len(q) for _, q in audit.unanswered),
        "retrospective": audit.retro.web_url if audit.retro else "",
        "closed": False,
        "tracking_issue": tracking.web_url,
    }


def audit_projects(settings: Settings) -> list[str]:
    if settings.audit_projects:
        return settings.audit_projects
    return [settings.launch_project or "marketing/launches"]


@flow(name="audit")
def audit(projects: list[str] | None = None) -> list[dict[str, Any]]:
    """Audit every open launch (each open tracking issue): share of work due by launch day
    done, overdue and blocked work, unanswered sister-issue questions, pages re-checked,
    calendar drift, a readiness score. Updates one audit note per launch in place, sets
    `launch-status::on-track | at-risk | ready` (`launched` from launch day), reminds owners
    of overdue work at most once a day (for blocked work, the owners of what blocks it). After
    launch day it keeps the retrospective (from T+7), shows success metrics against their
    actuals (from T+30) and closes the tracking issue once the retrospective is closed.
    Publishes the table under the artifact key `launch-audit`. Launches are audited in
    `audit-batch` subflow runs of up to BATCH launches, an `audit-launch` task run each.
    """
    logger = get_run_logger()
    # Each batch runs its own thread pools: with glibc's default of up to 16 malloc arenas
    # on 2 cores the process's peak memory grew with the batches (+16 MB from 100 to 1,000
    # launches), with 2 it stays flat (benchmarks/audit_scale.py).
    malloc.cap_arenas(2)
    settings = load_settings()
    playbook = team_playbook(settings)
    today = datetime.now(ZoneInfo(settings.timezone)).date()
    # One set of clients for the whole audit (the Calendar client serialises its calls):
    # building one per launch parsed Google's discovery document each time.
    systems = connect(settings)
    tracker, calendar = systems.tracker, systems.calendar
    # Every launch checks the same /features page and compare view: read them once.
    pages = KnownPages.observe(
        systems.pages, (settings.features_page, settings.features_compare_page)
    )
    rows: list[dict[str, Any]] = []
    batch: dict[int, IssueState] = {}  # the tracking issues of the next batch, by iid

    @flow(
        name="audit-batch",
        flow_run_name="audit {project} from #{launches[0]}",
        task_runner=ThreadPoolTaskRunner(max_workers=WORKERS),  # type: ignore[arg-type]
    )
    def audit_batch(project: str, launches: list[int]) -> list[dict[str, Any]]:
        """Audit the launches of ``project`` whose tracking issues (by iid) are listed, an
        ``audit-launch`` task run each, at most IN_FLIGHT at once. Returns their rows. The
        parameters are iids, not the issues: Prefect stores a flow run's parameters."""
        done: list[dict[str, Any]] = []
        running: deque[PrefectFuture[dict[str, Any]]] = deque()

        def collect(future: PrefectFuture[dict[str, Any]]) -> None:
            try:
                done.append(future.result())
            except TminusError as exc:
                done.append({"launch": "?", "status": "failed", "detail": str(exc)})

        for iid in launches:
            if len(running) >= IN_FLIGHT:
                collect(running.popleft())
            tracking = batch.pop(iid)
            running.append(
                audit_one.submit(
                    tracker,
                    calendar,
                    pages,
                    settings,
                    playbook,
                    project,
                    tracking,
                    today.isoformat(),
                )
            )
        while running:
            collect(running.popleft())
        return done

    def audit_pending(project: str) -> None:
        if batch:
            rows.extend(audit_batch(project, list(batch)))

    try:
        for project in projects or audit_projects(settings):
            # Read a page at a time as they are audited: the flow holds one batch of tracking
            # issues (a page of them), not every open launch.
            for tracking in tracker.iter_issues(project, [TRACKING_LABEL], state="opened"):
                if CANCELLED_LABEL in tracking.labels:
                    continue  # cancelled launches are not nagged about
                batch[tracking.iid] = tracking
                if len(batch) >= BATCH:
                    audit_pending(project)
            audit_pending(project)
        close_launches(tracker, rows)
    finally:  # their kept-alive connections
        systems.close()
    create_table_artifact(
        key="launch-audit",
        table=rows or [{"launch": "none", "status": "no open launches"}],
        description=f"Launch readiness on {today}",
    )
    logger.info("Audited %d launches", len(rows))
    return rows
