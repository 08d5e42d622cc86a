"""Prefect task around the marketing launch calendar."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tminus.domain.plan import Plan
from tminus.domain.results import ActionResult


@task(name="sync-calendar", cache_policy=NO_CACHE)
def sync_calendar(
    calendar: object, calendar_id: str, plan: Plan, dry_run: bool = False
) -> list[ActionResult]:
    """Put launch day and every calendar activity on the launch calendar; move or cancel
    entries when the date or tier changed. Idempotent by deterministic event ids."""
    return calendar.reconcile(  # type: ignore[attr-defined, no-any-return]
        calendar_id, plan.request.slug, list(plan.calendar), dry_run=dry_run
    )
