"""Prefect tasks around the marketing launch calendar: observe, diff (``domain.calendar``),
apply one change per task run (``tasks.apply``).

No Prefect retries and no caching: the adapter owns retries (``integrations.retry``), and
idempotency comes from the calendar itself (event ids derived from plan keys).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tminus.domain.calendar import CalendarChange, CalendarEvent, LaunchCalendar, diff_calendar
from tminus.domain.plan import Plan
from tminus.domain.results import ActionResult, Outcome
from tminus.errors import TminusError
from tminus.tasks.apply import Applying, apply_changes


@task(name="observe-calendar", cache_policy=NO_CACHE)
def observe_calendar(
    calendar: LaunchCalendar, calendar_id: str, launch_slug: str
) -> list[CalendarEvent]:
    """Read the launch's events from the launch calendar, cancelled ones too. Writes nothing."""
    return calendar.observe(calendar_id, launch_slug)


@task(
    name="apply-calendar-change",
    task_run_name="calendar {change.key}",
    cache_policy=NO_CACHE,
)
def apply_calendar_change(
    calendar: LaunchCalendar, calendar_id: str, change: CalendarChange
) -> ActionResult:
    """Write one change to the launch calendar: insert, move or edit, or cancel an entry."""
    return calendar.apply(calendar_id, change)


def reconcile_calendar(
    calendar: LaunchCalendar,
    calendar_id: str,
    plan: Plan,
    dry_run: bool = False,
    sales_email: str | None = None,
) -> Applying:
    """Put launch day and every calendar activity on the launch calendar; move or cancel
    entries when the date or tier changed. Observes (one task run), diffs, and applies each
    change in its own task run (none in a dry run).

    If the calendar cannot be read, nothing is applied and the one row says why.
    """
    slug = plan.request.slug
    try:
        observed = observe_calendar(calendar, calendar_id, slug)
    except TminusError as exc:
        row = ActionResult(
            key=f"{slug}/calendar",
            kind="calendar",
            title="Launch calendar",
            outcome=Outcome.failed,
            detail=str(exc),
        )
        return Applying([row])
    changes = diff_calendar(
        plan.calendar, observed, slug, skip_reason=calendar.skip_reason, sales_email=sales_email
    )
    return apply_changes(apply_calendar_change, changes, dry_run, calendar, calendar_id)
