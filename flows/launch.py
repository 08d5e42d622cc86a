"""The launch flow: request -> plan -> reconcile issues -> report.

No ``from __future__ import annotations`` here: with it, a run started from a deployment (UI,
trigger, schedule) fails parameter validation because ``LaunchRequest`` is "not fully defined".
"""

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger, pause_flow_run
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.input import RunInput
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from integrations.clients import build_calendar, build_checker, build_notifier, build_tracker
from tasks.calendar import sync_calendar
from tasks.issues import (
    check_gitlab,
    drop_issue,
    ensure_issue,
    ensure_labels,
    ensure_links,
    find_launch_issues,
)
from tasks.pages import check_pages
from tasks.sales import (
    SALES_NOTE_MARKER,
    outcome_for,
    post_sales_message,
    record_sales_message,
    sales_decision,
    sales_result,
)
from tminus.errors import TminusError
from tminus.plan import IssueRole, Plan
from tminus.planner import plan_launch
from tminus.playbook import load_playbook
from tminus.reconcile import ActionResult, IssueTracker, Outcome
from tminus.report import counts, plan_markdown, results_rows
from tminus.request import LaunchRequest
from tminus.sales import sales_message
from tminus.settings import Settings, load_settings


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
            request.launch_label,
            plan.launch_marker,
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


def notify_sales(
    tracker: IssueTracker,
    settings: Settings,
    plan: Plan,
    tracking: ActionResult | None,
    dry_run: bool,
) -> ActionResult:
    """Tell sales once per launch (a correction when tier or date moved), after approval
    where the playbook asks for it. Runs last: the message links the tracking issue."""
    logger = get_run_logger()
    notification = plan.notification
    assert notification is not None
    if tracking is None or tracking.iid is None:
        return sales_result(plan, Outcome.skipped, "no tracking issue to record the message on")
    notifier = build_notifier(settings)
    if notifier is None:
        return sales_result(plan, Outcome.skipped, "TMINUS_SLACK_WEBHOOK_URL is not set")
    decision, previous, note_id = sales_decision(tracker, plan, tracking.iid)
    if decision is None:
        return sales_result(plan, Outcome.unchanged, "sales already told; tier and date unchanged")
    payload = sales_message(
        plan.request,
        tracking_url=tracking.url,
        features_url=settings.features_page,
        correction_of=previous if decision == "correct" else None,
    )
    what = "announcement" if decision == "announce" else "correction"
    if dry_run:
        return sales_result(plan, outcome_for(decision), f"would send the {what}")
    preview = f"## Message to sales ({what})\n\n{payload['text']}\n"
    create_markdown_artifact(
        key=f"sales-message-{plan.request.slug}",
        markdown=preview,
        description=f"Sales {what} for {plan.request.title}",
    )
    if notification.needs_approval:
        logger.info(
            "Waiting for a PMM to approve the sales %s: resume this flow run in the Prefect UI",
            what,
        )
        answer = pause_flow_run(
            wait_for_input=SalesApproval.with_initial_data(
                description=preview + "\nApprove to send it to the sales channel.",
                approve=False,
            ),
            timeout=settings.approval_timeout,
            poll_interval=2,
        )
        if not answer.approve:
            logger.info("Sales %s declined: %s", what, answer.comment or "no comment")
            return sales_result(plan, Outcome.skipped, f"declined by the PMM: {answer.comment}")
    post_sales_message(notifier, payload)
    record_sales_message(
        tracker,
        plan,
        tracking.iid,
        decision,
        note_id,
        None if note_id is None else _note_body(tracker, plan, tracking.iid),
    )
    return sales_result(plan, outcome_for(decision), f"{what} sent")


def _note_body(tracker: IssueTracker, plan: Plan, iid: int) -> str | None:
    found = tracker.find_note(plan.request.project, iid, SALES_NOTE_MARKER)
    return found[1] if found else None


def _settled_list(
    future: PrefectFuture[list[ActionResult]], key: str, kind: str, title: str
) -> list[ActionResult]:
    try:
        return future.result()
    except Exception as exc:
        return [
            ActionResult(key=key, kind=kind, title=title, outcome=Outcome.failed, detail=str(exc))
        ]


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

    # Independent work runs at once: calendar and page checks in worker threads while the
    # issues are reconciled; the sales notification runs last.
    # GitLab is checked first (project, people): a launch that cannot be done writes nothing.
    slug = request.slug
    tracker = build_tracker(settings)
    user_ids = check_gitlab(tracker, plan)
    calendar = sync_calendar.submit(build_calendar(settings), settings.calendar_id, plan, dry_run)
    pages = check_pages.submit(build_checker(settings), plan, settings)
    results = reconcile_issues(tracker, plan, user_ids, dry_run=dry_run)
    results += _settled_list(calendar, f"{slug}/calendar", "calendar", "Launch calendar")
    results += _settled_list(pages, f"{slug}/pages", "page", "Page checks")
    if plan.notification is not None:
        tracking_result = next((r for r in results if r.kind == IssueRole.tracking.value), None)
        try:
            results.append(notify_sales(tracker, settings, plan, tracking_result, dry_run))
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
