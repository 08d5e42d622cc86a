"""The launch flow: request -> plan -> reconcile issues -> report.

No ``from __future__ import annotations`` here: with it, a run started from a deployment (UI,
trigger, schedule) fails parameter validation because ``LaunchRequest`` is "not fully defined".
"""

from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger, pause_flow_run, suspend_flow_run
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.input import RunInput
from prefect.runtime import deployment as deployment_ctx
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from tminus.domain.issues import IssueTracker
from tminus.domain.plan import IssueRole, Plan
from tminus.domain.planner import plan_launch
from tminus.domain.report import counts, plan_markdown, results_rows
from tminus.domain.request import LaunchRequest
from tminus.domain.results import ActionResult, Outcome
from tminus.domain.sales import intent_note, sales_message, sent_note, sent_record
from tminus.errors import IntegrationError, MaybeSentError, TminusError
from tminus.integrations.clients import build_calendar, build_checker, build_notifier, build_tracker
from tminus.integrations.files import load_playbook
from tminus.integrations.slack import as_markdown
from tminus.settings import Settings, load_settings
from tminus.tasks.calendar import sync_calendar
from tminus.tasks.issues import (
    CANCELLED_LABEL,
    check_gitlab,
    drop_issue,
    ensure_issue,
    ensure_labels,
    ensure_links,
    find_launch_issues,
)
from tminus.tasks.locks import launch_lock
from tminus.tasks.pages import check_pages
from tminus.tasks.sales import (
    MAYBE_SENT,
    SalesState,
    now_stamp,
    outcome_for,
    post_sales_message,
    sales_decision,
    sales_result,
    write_sales_note,
)


class LaunchIncomplete(TminusError):
    """Some actions failed; the others were done. Carries every result."""

    def __init__(self, summary: dict[str, Any]) -> None:
        self.summary = summary
        failed = [
            r
            for r in summary["results"]
            if r["outcome"] == Outcome.failed.value and r["kind"] != "page"
        ]
        lines = "\n".join(f"  - {r['title']}: {r['detail']}" for r in failed)
        super().__init__(f"{len(failed)} of {len(summary['results'])} actions failed:\n{lines}")


def _settled(future: PrefectFuture[ActionResult], key: str, kind: str, title: str) -> ActionResult:
    """A task's result, or a failed row carrying its error."""
    try:
        return future.result()
    except Exception as exc:
        return ActionResult(
            key=key, kind=kind, title=title, outcome=Outcome.failed, detail=str(exc)
        )


def reconcile_issues(
    tracker: IssueTracker, plan: Plan, user_ids: dict[str, int], dry_run: bool = False
) -> list[ActionResult]:
    """Bring GitLab to the plan: labels, activity and sister issues, the tracking issue, links."""
    request = plan.request
    project = request.project
    existing = find_launch_issues(tracker, plan)
    # Labels first, but a label failure is reported, not fatal: GitLab also creates the
    # labels an issue names (without our colors).
    results = [
        _settled(
            ensure_labels.submit(tracker, plan, dry_run),
            f"{request.slug}/labels",
            "labels",
            "Labels",
        )
    ]

    def submit(spec: Any, refs: dict[str, int]) -> PrefectFuture[ActionResult]:
        return ensure_issue.submit(
            tracker,
            project,
            spec,
            existing.get(spec.key),
            user_ids.get(spec.assignee) if spec.assignee else None,
            refs,
            dry_run,
        )

    futures = [(spec, submit(spec, {})) for spec in plan.issues]
    refs: dict[str, int] = {}
    for spec, future in futures:
        res = _settled(future, spec.key, spec.role.value, spec.title)
        results.append(res)
        if res.iid is not None:
            refs[spec.key] = res.iid

    tracking = _settled(
        submit(plan.tracking, refs), plan.tracking.key, "tracking", plan.tracking.title
    )
    results.append(tracking)

    planned = {spec.key for spec in plan.all_issues}
    dropped = [s for key, s in existing.items() if key not in planned]
    reason = (
        f"this activity is not part of the {request.tier.value} launch any more "
        f"(playbook {plan.playbook})"
    )
    drops = [(s, drop_issue.submit(tracker, project, s, reason, dry_run)) for s in dropped]
    results += [_settled(f, s.key or "", "dropped", s.title) for s, f in drops]

    if tracking.iid is not None and refs:
        results.append(
            _settled(
                ensure_links.submit(tracker, project, tracking.iid, list(refs.values()), dry_run),
                f"{plan.tracking.key}/links",
                "links",
                "Links to the tracking issue",
            )
        )
    return results


class SalesApproval(RunInput):
    """A PMM's answer to "send this launch message to sales?"."""

    approve: bool = Field(default=False, description="Send the message shown above to sales.")
    comment: str = Field(default="", description="Optional: why (kept in the run's logs).")


@dataclass
class PendingMessage:
    """A message to sales that is decided but not sent yet."""

    state: SalesState
    payload: dict[str, Any]
    what: str
    tracking_iid: int

    @property
    def shown(self) -> str:
        """The whole message as sales will read it (markdown), for the artifact and the form."""
        return f"## Message to sales ({self.what})\n\n{as_markdown(self.payload)}\n"


def prepare_sales(
    tracker: IssueTracker,
    settings: Settings,
    plan: Plan,
    tracking: ActionResult | None,
    dry_run: bool,
) -> ActionResult | PendingMessage:
    """What sales should be told now: nothing (a result says why) or a pending message."""
    if tracking is None or tracking.iid is None:
        return sales_result(plan, Outcome.skipped, "no tracking issue to record the message on")
    if build_notifier(settings) is None:
        return sales_result(plan, Outcome.skipped, "TMINUS_SLACK_WEBHOOK_URL is not set")
    state = sales_decision(tracker, plan, tracking.iid)
    if state.decision == "unknown":
        return sales_result(plan, Outcome.failed, MAYBE_SENT, url=tracking.url)
    settled = state.note.settled()
    if state.decision is None:
        if settled != state.note and not dry_run:  # a PMM said "it arrived": tidy the note
            write_sales_note(tracker, plan, tracking.iid, state.note_id, settled)
        return sales_result(plan, Outcome.unchanged, "sales already told; tier and date unchanged")
    payload = sales_message(
        plan.request,
        tracking_url=tracking.url,
        features_url=settings.features_page,
        correction_of=settled.sent if state.decision == "correct" else None,
    )
    what = "announcement" if state.decision == "announce" else "correction"
    if dry_run:
        return sales_result(plan, outcome_for(state.decision), f"would send the {what}")
    pending = PendingMessage(state, payload, what, tracking.iid)
    create_markdown_artifact(
        key=f"sales-message-{plan.request.slug}",
        markdown=pending.shown,
        description=f"Sales {what} for {plan.request.title}",
    )
    return pending


def send_to_sales(
    tracker: IssueTracker, settings: Settings, plan: Plan, pending: PendingMessage
) -> ActionResult:
    """Record the intent, post once, record what was sent. Call with the launch lock held.

    At most once: the intent is on the tracking issue before the post, so a lost answer or a
    crash leaves a "maybe sent" note for a PMM instead of a second message."""
    notifier = build_notifier(settings)
    assert notifier is not None
    state, iid = pending.state, pending.tracking_iid
    settled = state.note.settled()
    intent = intent_note(settled, sent_record(plan.request), uuid4().hex[:8])
    note_id = write_sales_note(tracker, plan, iid, state.note_id, intent)
    try:
        post_sales_message(notifier, pending.payload)
    except MaybeSentError:
        return sales_result(plan, Outcome.failed, MAYBE_SENT)
    except IntegrationError as exc:
        # Surely not posted (refused, or unreachable after every attempt): forget the intent.
        write_sales_note(tracker, plan, iid, note_id, settled)
        return sales_result(plan, Outcome.failed, f"not sent: {exc}")
    try:
        write_sales_note(tracker, plan, iid, note_id, sent_note(intent, now_stamp()))
    except TminusError as exc:
        return sales_result(
            plan,
            Outcome.failed,
            f"{pending.what} sent, but recording it on the tracking issue failed ({exc}): its "
            "sales note still says the message is in flight; tick 'It arrived' there",
        )
    return sales_result(plan, outcome_for(state.decision), f"{pending.what} sent")


def approve_and_send(
    tracker: IssueTracker, settings: Settings, plan: Plan, pending: PendingMessage
) -> ActionResult:
    """Wait for a PMM (without holding the launch lock), then send what was approved, unless
    the launch changed meanwhile or another run already told sales."""
    logger = get_run_logger()
    logger.info(
        "Waiting for a PMM to approve the sales %s: resume this flow run in the Prefect UI",
        pending.what,
    )
    form = SalesApproval.with_initial_data(
        description=f"{pending.shown}\nApprove to send it to the sales channel.",
        approve=False,
    )
    if deployment_ctx.id:
        # A deployment run (UI, trigger, schedule) suspends: its process exits and frees the
        # runner's slot while the PMM takes their time; on Resume the run starts again from
        # the top (every step is idempotent: nothing is redone) and gets the answer here.
        key = f"sales-{pending.state.decision}-{sent_record(plan.request).digest}"
        answer = suspend_flow_run(wait_for_input=form, timeout=settings.approval_timeout, key=key)
    else:
        answer = pause_flow_run(
            wait_for_input=form, timeout=settings.approval_timeout, poll_interval=2
        )
    if not answer.approve:
        logger.info("Sales %s declined: %s", pending.what, answer.comment or "no comment")
        return sales_result(plan, Outcome.skipped, f"declined by the PMM: {answer.comment}")
    with launch_lock(plan.request.slug) as lock:
        now = sales_decision(tracker, plan, pending.tracking_iid)
        if now.decision != pending.state.decision or now.note != pending.state.note:
            return sales_result(
                plan,
                Outcome.skipped,
                "sales was told by another run while this one waited for approval",
            )
        if tracker_has_label(tracker, plan, pending.tracking_iid, CANCELLED_LABEL):
            return sales_result(plan, Outcome.skipped, "the launch was cancelled meanwhile")
        lock.check()
        return send_to_sales(tracker, settings, plan, replace(pending, state=now))


def tracker_has_label(tracker: IssueTracker, plan: Plan, iid: int, label: str) -> bool:
    request = plan.request
    return any(
        s.iid == iid and label in s.labels
        for s in tracker.find_issues(request.project, request.launch_label, plan.launch_marker)
    )


def _settled_list(
    future: PrefectFuture[list[ActionResult]], key: str, kind: str, title: str
) -> list[ActionResult]:
    try:
        return future.result()
    except Exception as exc:
        return [
            ActionResult(key=key, kind=kind, title=title, outcome=Outcome.failed, detail=str(exc))
        ]


def _no_guard() -> None:
    """A dry run holds no lock and writes nothing: nothing to check."""


def publish(plan: Plan, results: list[ActionResult], dry_run: bool) -> None:
    slug = plan.request.slug
    prefix = "Dry run: what a real run would do" if dry_run else "Results"
    create_table_artifact(
        key=f"launch-results-{slug}",
        table=results_rows(results),
        description=f"{prefix} for launch {plan.request.title}: {counts(results)}",
    )


@flow(name="launch", task_runner=ThreadPoolTaskRunner(max_workers=8))  # type: ignore[arg-type]
def launch(request: LaunchRequest, dry_run: bool = False) -> dict[str, Any]:
    """Turn a launch decision into its work, as the playbook says for its tier: the launch
    tracking issue, one issue per activity and one sister marketing issue per priority feature
    in GitLab; launch day and calendar activities on the marketing launch calendar; checks
    that docs and the /features page mention every priority feature; and one message to
    sales (after a PMM approves it, for the tiers the playbook names). Running it again
    changes only what drifted; a moved date or tier sends sales one correction.

    With `dry_run`, nothing is written or sent: the results table says what a run would do.
    """
    logger = get_run_logger()
    settings = load_settings()
    playbook = load_playbook(settings.playbook)
    today = datetime.now(ZoneInfo(settings.timezone)).date()
    plan = plan_launch(request, playbook, today)
    create_markdown_artifact(
        key=f"launch-plan-{request.slug}",
        markdown=plan_markdown(plan),
        description=f"Plan for launch {request.title}",
    )
    for warning in plan.warnings:
        logger.warning(warning)

    # GitLab is checked first (project, people): a launch that cannot be done writes nothing.
    # Then calendar and page checks run in worker threads while the issues are reconciled; the
    # sales notification runs last. One run per launch at a time writes (the launch lock).
    slug = request.slug
    tracker = build_tracker(settings)
    pending: PendingMessage | None = None
    with nullcontext() if dry_run else launch_lock(slug) as lock:
        guard = lock.check if lock else _no_guard
        user_ids = check_gitlab(tracker, plan)
        guard()
        calendar = sync_calendar.submit(
            build_calendar(settings), settings.calendar_id, plan, dry_run
        )
        pages = check_pages.submit(build_checker(settings), plan, settings)
        results = reconcile_issues(tracker, plan, user_ids, dry_run=dry_run)
        results += _settled_list(calendar, f"{slug}/calendar", "calendar", "Launch calendar")
        results += _settled_list(pages, f"{slug}/pages", "page", "Page checks")
        if plan.notification is not None:
            tracking_result = next((r for r in results if r.kind == IssueRole.tracking.value), None)
            try:
                prepared = prepare_sales(tracker, settings, plan, tracking_result, dry_run)
                if isinstance(prepared, ActionResult):
                    results.append(prepared)
                elif plan.notification.needs_approval:
                    pending = prepared  # approved below, without holding the lock
                else:
                    guard()
                    results.append(send_to_sales(tracker, settings, plan, prepared))
            except Exception as exc:
                results.append(sales_result(plan, Outcome.failed, str(exc)))
    if pending is not None:
        try:
            results.append(approve_and_send(tracker, settings, plan, pending))
        except Exception as exc:
            results.append(sales_result(plan, Outcome.failed, str(exc)))
    publish(plan, results, dry_run)
    tracking = next((r for r in results if r.kind == IssueRole.tracking.value), None)
    summary: dict[str, Any] = {
        "launch": request.slug,
        "dry_run": dry_run,
        "tracking_url": tracking.url if tracking else None,
        "counts": counts(results),
        "results": results_rows(results),
        "warnings": list(plan.warnings),
    }
    logger.info("Launch %s: %s", request.slug, summary["counts"])
    # A failing page lowers readiness and shows in the results; it does not fail the launch.
    if any(r.outcome is Outcome.failed and r.kind != "page" for r in results):
        raise LaunchIncomplete(summary)
    return summary
