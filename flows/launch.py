"""The launch flow, as the checklist reads: check, plan, issues, calendar, pages, sales, report.

Every system follows one shape: observe (read only), diff (pure, ``tminus.domain``), apply (one
task run per change, ``tminus.tasks``). A dry run diffs and applies nothing.

No ``from __future__ import annotations`` here: with it, a run started from a deployment (UI,
trigger, schedule) fails parameter validation because ``LaunchRequest`` is "not fully defined".
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from tminus.domain.plan import Plan
from tminus.domain.planner import plan_launch
from tminus.domain.playbook import Playbook
from tminus.domain.report import LaunchReport, counts, plan_markdown, results_rows
from tminus.domain.request import LaunchRequest
from tminus.domain.results import ActionResult
from tminus.errors import LaunchIncomplete
from tminus.flows.sales import PendingMessage, SalesStart, finish_sales
from tminus.integrations.clients import connect
from tminus.integrations.gitlab_repo import team_playbook
from tminus.settings import Settings, load_settings
from tminus.tasks.apply import settle
from tminus.tasks.calendar import reconcile_calendar
from tminus.tasks.issues import check_gitlab, reconcile_issues
from tminus.tasks.locks import launch_lock
from tminus.tasks.pages import check_pages

Guard = Callable[[], None]


def plan_step(
    request: LaunchRequest, playbook: Playbook, settings: Settings, artifacts: bool = True
) -> Plan:
    """The plan for today (pure), shown as an artifact; its warnings go to the run's log."""
    plan = plan_launch(request, playbook, datetime.now(ZoneInfo(settings.timezone)).date())
    if artifacts:
        create_markdown_artifact(
            key=f"launch-plan-{request.slug}",
            markdown=plan_markdown(plan),
            description=f"Plan for launch {request.title}",
        )
    for warning in plan.warnings:
        get_run_logger().warning(warning)
    return plan


@contextmanager
def writer(slug: str, dry_run: bool) -> Iterator[Guard]:
    """One run per launch at a time writes (the launch lock); the guard checks, before each
    write that matters, that this run still holds it. A dry run writes nothing: no lock."""
    if dry_run:
        yield lambda: None
        return
    with launch_lock(slug) as lock:
        yield lock.check


def report_step(
    plan: Plan, results: list[ActionResult], dry_run: bool, artifacts: bool = True
) -> LaunchReport:
    """The results table artifact and the report; raises ``LaunchIncomplete`` when an action
    failed (a failing page lowers readiness but does not fail the launch)."""
    request = plan.request
    report = LaunchReport(request.slug, dry_run, tuple(results), tuple(plan.warnings))
    prefix = "Dry run: what a real run would do" if dry_run else "Results"
    if artifacts:
        create_table_artifact(
            key=f"launch-results-{request.slug}",
            table=results_rows(results),
            description=f"{prefix} for launch {request.title}: {counts(results)}",
        )
    get_run_logger().info("Launch %s: %s", request.slug, report.counts)
    if report.failed:
        raise LaunchIncomplete(report)
    return report


# Task runs mostly wait on the network, and the adapters bound the calls in flight (GitLab:
# TMINUS_GITLAB_CONCURRENCY, at most 32), so the runner's threads must not be the tighter bound:
# issue changes, calendar changes and the page checks run side by side.
@flow(name="launch", task_runner=ThreadPoolTaskRunner(max_workers=40))  # type: ignore[arg-type]
def launch(request: LaunchRequest, dry_run: bool = False) -> LaunchReport:
    """Turn a launch decision into its work, as the playbook says for its tier: the launch
    tracking issue, one issue per activity and one sister marketing issue per priority feature
    in GitLab; launch day and calendar activities on the marketing launch calendar; checks
    that docs and the /features page mention every priority feature; and one message to
    sales (after a PMM approves it, for the tiers the playbook names). Running it again
    changes only what drifted; a moved date or tier sends sales one correction.

    With `dry_run`, nothing is written or sent: the results table says what a run would do.
    """
    settings = load_settings()
    return run_launch(request, team_playbook(settings), settings, dry_run)


def run_launch(
    request: LaunchRequest,
    playbook: Playbook,
    settings: Settings,
    dry_run: bool,
    *,
    artifacts: bool = True,
) -> LaunchReport:
    """The launch flow's work, in the calling flow run (the ``preview`` flow dry-runs launches
    with it, without the plan and results artifacts that belong to the launch's own runs)."""
    plan = plan_step(request, playbook, settings, artifacts)
    pending: PendingMessage | None = None
    with connect(settings) as systems, writer(request.slug, dry_run) as guard:
        # Check: the project and every person named exist, before anything is written; the
        # launch's issues and the project's labels are read with them.
        seen = check_gitlab(systems.tracker, plan)
        guard()
        # Calendar changes and page reads run in worker threads while issues are reconciled.
        calendar = reconcile_calendar(
            systems.calendar, systems.calendar_id, plan, dry_run, settings.sales_channel_email
        )
        pages = check_pages.submit(systems.pages, plan, settings)
        # Sales starts once the tracking issue is written, while the issues' links are made.
        with SalesStart(systems, settings, plan, dry_run, guard) as start:
            results = reconcile_issues(systems.tracker, plan, seen, dry_run, start.begin)
            results += calendar.results()
            results += settle(pages, f"{request.slug}/pages", "page", "Page checks")
            sales = start.result(results)
        if isinstance(sales, ActionResult):
            results.append(sales)
        pending = sales if isinstance(sales, PendingMessage) else None
    if pending is not None:  # approved and sent without holding the lock while a PMM decides
        with connect(settings) as systems:
            results.append(finish_sales(systems, settings, plan, pending))
    return report_step(plan, results, dry_run, artifacts)
