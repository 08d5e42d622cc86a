"""``tasks.calendar.reconcile_calendar`` in real flow runs on the Prefect test server, against
the in-memory launch calendar: one task run per change, dry runs, and how failures surface."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prefect import flow

from tests.conftest import TODAY
from tminus.domain.calendar import CalendarChange, CalendarEvent
from tminus.domain.plan import Plan
from tminus.domain.planner import plan_launch
from tminus.domain.playbook import Playbook
from tminus.domain.request import LaunchRequest
from tminus.domain.results import ActionResult, Outcome
from tminus.errors import PermanentError
from tminus.integrations.calendar_memory import MemoryCalendar
from tminus.integrations.gcal import NoCalendar, UnconfiguredCalendar
from tminus.tasks.calendar import reconcile_calendar

pytestmark = pytest.mark.usefixtures("prefect_server")

CAL = "marketing-launches"


@flow
def run(calendar: object, plan: Plan, dry_run: bool = False) -> list[ActionResult]:
    return reconcile_calendar(calendar, CAL, plan, dry_run).results()  # type: ignore[arg-type]


class Refusing(MemoryCalendar):
    """Refuses writes to one key, as Google refuses a bad event."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def apply(self, calendar_id: str, change: CalendarChange) -> ActionResult:
        if change.key == self.key:
            raise PermanentError("Memory calendar", "refused", status=400, resource=change.key)
        return super().apply(calendar_id, change)


class Broken(MemoryCalendar):
    def observe(self, calendar_id: str, launch_slug: str) -> list[CalendarEvent]:
        raise RuntimeError("a bug, not a refusal")


def test_applies_each_change_and_a_dry_run_writes_nothing(
    l1: LaunchRequest, playbook: Playbook
) -> None:
    calendar = MemoryCalendar()
    plan = plan_launch(l1, playbook, TODAY)
    rows = run(calendar, plan)
    assert [(r.key, r.outcome) for r in rows] == [(s.key, Outcome.created) for s in plan.calendar]
    assert all(r.url for r in rows)
    held = dict(calendar.events[CAL])
    moved = plan_launch(
        l1.model_copy(update={"launch_date": l1.launch_date + timedelta(7)}), playbook, TODAY
    )
    rows = run(calendar, moved, dry_run=True)
    assert {r.outcome for r in rows} == {Outcome.updated}
    assert calendar.events[CAL] == held
    assert {r.outcome for r in run(calendar, plan)} == {Outcome.unchanged}


def test_one_refused_change_fails_its_row_only(l1: LaunchRequest, playbook: Playbook) -> None:
    plan = plan_launch(l1, playbook, TODAY)
    refused = plan.calendar[1].key
    rows = {r.key: r for r in run(Refusing(refused), plan)}
    assert rows[refused].outcome is Outcome.failed
    assert rows[refused].detail == f"Memory calendar {refused} (400): refused"
    assert {r.outcome for k, r in rows.items() if k != refused} == {Outcome.created}


def test_a_calendar_that_cannot_be_read_is_one_failed_row(
    l1: LaunchRequest, playbook: Playbook
) -> None:
    plan = plan_launch(l1, playbook, TODAY)
    (row,) = run(UnconfiguredCalendar("key file missing"), plan)
    assert (row.key, row.kind, row.title, row.outcome) == (
        f"{l1.slug}/calendar",
        "calendar",
        "Launch calendar",
        Outcome.failed,
    )
    assert "key file missing" in row.detail


def test_no_calendar_skips_every_entry(l1: LaunchRequest, playbook: Playbook) -> None:
    plan = plan_launch(l1, playbook, TODAY)
    rows = run(NoCalendar(), plan)
    assert [r.key for r in rows] == [s.key for s in plan.calendar]
    assert {(r.outcome, r.detail) for r in rows} == {(Outcome.skipped, NoCalendar.REASON)}


def test_a_bug_is_not_a_failed_row(l1: LaunchRequest, playbook: Playbook) -> None:
    with pytest.raises(RuntimeError, match="a bug"):
        run(Broken(), plan_launch(l1, playbook, TODAY))
