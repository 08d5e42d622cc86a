"""The ``LaunchCalendar`` contract, run against every implementation: the in-memory fake and
the Google adapter talking over real HTTP to the Calendar stand-in.

Only the port is used (``observe`` and ``apply``), never a backend's own storage: what passes
here is what the reconcile in ``tasks.calendar`` may rely on.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest

from tests.conftest import TODAY, SandboxClient
from tminus.domain.calendar import (
    CalendarEvent,
    CancelEvent,
    InsertEvent,
    KeepEvent,
    LaunchCalendar,
    UpdateEvent,
    diff_calendar,
    end_day,
    event_id,
)
from tminus.domain.plan import Plan
from tminus.domain.planner import plan_launch
from tminus.domain.playbook import Playbook
from tminus.domain.request import LaunchRequest, Tier
from tminus.domain.results import ActionResult, Outcome, is_noop
from tminus.errors import PermanentError
from tminus.integrations.calendar_memory import MemoryCalendar
from tminus.integrations.gcal import CalendarAdapter, build_calendar_service
from tminus.integrations.retry import RetryPolicy

CAL = "marketing-launches@group.calendar.google.com"


def no_sleep(seconds: float) -> None:
    return None


@pytest.fixture(params=["memory", "google"])
def calendar(request: pytest.FixtureRequest) -> Iterator[LaunchCalendar]:
    if request.param == "memory":
        yield MemoryCalendar()
        return
    sandbox: SandboxClient = request.getfixturevalue("sandbox")  # emptied for each test
    service = build_calendar_service(f"{sandbox.url}/calendar/v3/")
    adapter = CalendarAdapter(service, retry=RetryPolicy(attempts=3, sleep=no_sleep))
    yield adapter
    adapter.close()


def plan_for(request: LaunchRequest, playbook: Playbook, **changes: Any) -> Plan:
    return plan_launch(request.model_copy(update=changes), playbook, TODAY)


def diff(calendar: LaunchCalendar, plan: Plan) -> list[Any]:
    slug = plan.request.slug
    observed = calendar.observe(CAL, slug)
    return diff_calendar(plan.calendar, observed, slug, skip_reason=calendar.skip_reason)


def sync(calendar: LaunchCalendar, plan: Plan) -> dict[str, ActionResult]:
    """Observe, diff, apply every change that does something; the rows by key."""
    rows = []
    for change in diff(calendar, plan):
        planned = change.planned()
        rows.append(planned if is_noop(planned) else calendar.apply(CAL, change))
    return {row.key: row for row in rows}


def observed(calendar: LaunchCalendar, slug: str) -> dict[str, CalendarEvent]:
    events = calendar.observe(CAL, slug)
    keys = [e.key for e in events]
    assert len(keys) == len(set(keys)), f"one event per key: {keys}"
    return {e.key: e for e in events}


def test_nothing_is_observed_on_an_empty_calendar(calendar: LaunchCalendar) -> None:
    assert calendar.observe(CAL, "code-review-agent") == []


def test_observe_after_insert_shows_each_entry(
    calendar: LaunchCalendar, l1: LaunchRequest, playbook: Playbook
) -> None:
    plan = plan_for(l1, playbook)
    rows = sync(calendar, plan)
    events = observed(calendar, plan.request.slug)
    assert set(events) == {spec.key for spec in plan.calendar}
    for spec in plan.calendar:
        event = events[spec.key]
        assert event.event_id == event_id(spec.key)
        assert (event.title, event.description) == (spec.title, spec.description)
        assert (event.start, event.end) == (spec.day, end_day(spec.day))
        assert (event.start_time, event.end_time) == (None, None)  # all day
        assert (event.launch_slug, event.activity_key) == (plan.request.slug, spec.activity_key)
        assert not event.cancelled
        row = rows[spec.key]
        assert (row.kind, row.title, row.outcome) == ("calendar", spec.title, Outcome.created)
        assert row.url is not None and row.url == event.url


def test_inserting_twice_leaves_one_event(
    calendar: LaunchCalendar, l1: LaunchRequest, playbook: Playbook
) -> None:
    plan = plan_for(l1, playbook)
    spec = plan.calendar[0]
    insert = InsertEvent(spec, plan.request.slug)
    assert calendar.apply(CAL, insert).outcome is Outcome.created
    again = calendar.apply(CAL, insert)  # a lost answer, retried; or a lagging observation
    assert (again.outcome, again.detail) == (Outcome.unchanged, "already on the calendar")
    assert list(observed(calendar, plan.request.slug)) == [spec.key]
    # A stale insert of an entry that changed since brings the event it finds to the entry.
    renamed = spec.model_copy(update={"title": "Launch day, renamed"})
    row = calendar.apply(CAL, InsertEvent(renamed, plan.request.slug))
    assert (row.outcome, row.detail) == (Outcome.updated, "changed: title")
    (event,) = calendar.observe(CAL, plan.request.slug)
    assert (event.title, event.event_id) == ("Launch day, renamed", event_id(spec.key))


def test_update_moves_and_retitles_in_place(
    calendar: LaunchCalendar, l1: LaunchRequest, playbook: Playbook
) -> None:
    sync(calendar, plan_for(l1, playbook))
    before = observed(calendar, l1.slug)
    moved = plan_for(l1, playbook, launch_date=l1.launch_date + timedelta(days=7), tier=Tier.L2)
    changes = {c.key: c for c in diff(calendar, moved)}
    launch_day = next(s for s in moved.calendar if s.key.endswith("/launch-day"))
    update = changes[launch_day.key]
    assert isinstance(update, UpdateEvent)
    assert update.start == launch_day.day and update.title == launch_day.title
    rows = sync(calendar, moved)
    assert rows[launch_day.key].outcome is Outcome.updated
    after = observed(calendar, l1.slug)
    event = after[launch_day.key]
    assert (event.start, event.end) == (launch_day.day, end_day(launch_day.day))
    assert event.title == launch_day.title
    assert event.event_id == before[launch_day.key].event_id  # moved, not re-created
    assert set(after) == set(before)


def test_cancel_keeps_the_event_and_a_revive_brings_it_back(
    calendar: LaunchCalendar, l1: LaunchRequest, playbook: Playbook
) -> None:
    big = plan_for(l1, playbook)
    sync(calendar, big)
    small = plan_for(l1, playbook, tier=Tier.L3)
    dropped = {s.key for s in big.calendar} - {s.key for s in small.calendar}
    assert dropped
    assert {c.key for c in diff(calendar, small) if isinstance(c, CancelEvent)} == dropped
    rows = sync(calendar, small)
    assert {rows[k].outcome for k in dropped} == {Outcome.closed}
    events = observed(calendar, l1.slug)
    assert set(events) == {s.key for s in big.calendar}  # cancelled ones are observed too
    assert {k for k, e in events.items() if e.cancelled} == dropped
    kept = [c for c in diff(calendar, small) if c.key in dropped]
    assert all(isinstance(c, KeepEvent) for c in kept)
    assert {c.planned().detail for c in kept} == {"cancelled: no longer planned"}

    rows = sync(calendar, big)
    assert all(rows[k].detail.startswith("changed: revived") for k in dropped)
    assert not any(e.cancelled for e in observed(calendar, l1.slug).values())


def test_observe_returns_only_that_launchs_events(
    calendar: LaunchCalendar, l1: LaunchRequest, l2: LaunchRequest, playbook: Playbook
) -> None:
    one, two = plan_for(l1, playbook), plan_for(l2, playbook)
    sync(calendar, one)
    sync(calendar, two)
    assert set(observed(calendar, l1.slug)) == {s.key for s in one.calendar}
    assert set(observed(calendar, l2.slug)) == {s.key for s in two.calendar}
    assert {e.launch_slug for e in calendar.observe(CAL, l2.slug)} == {l2.slug}
    assert calendar.observe(CAL, "no-such-launch") == []
    assert calendar.observe("another-calendar@group.calendar.google.com", l1.slug) == []


@pytest.mark.parametrize(
    "changes",
    [{}, {"tier": Tier.L2}, {"tier": Tier.L3}, {"launch_date": date(2027, 4, 6)}],
    ids=["as-planned", "l2", "l3", "moved"],
)
def test_a_plan_diffed_against_its_own_result_is_all_noops(
    calendar: LaunchCalendar, l1: LaunchRequest, playbook: Playbook, changes: dict[str, Any]
) -> None:
    sync(calendar, plan_for(l1, playbook))
    plan = plan_for(l1, playbook, **changes)
    sync(calendar, plan)
    after = diff(calendar, plan)
    assert after and all(is_noop(c.planned()) for c in after), [c.planned() for c in after]


def test_the_sales_channel_is_invited_once_and_kept_beside_other_attendees(
    calendar: LaunchCalendar, l1: LaunchRequest, playbook: Playbook
) -> None:
    plan = plan_for(l1, playbook)
    (training,) = [s for s in plan.calendar if s.invite_sales]
    sales = "sales@example.com"

    def sync_with(email: str | None) -> list[Any]:
        changes = diff_calendar(
            plan.calendar, calendar.observe(CAL, l1.slug), l1.slug, sales_email=email
        )
        return [calendar.apply(CAL, c) for c in changes if not is_noop(c.planned())]

    sync_with(None)
    assert observed(calendar, l1.slug)[training.key].attendees == ()
    assert len(sync_with(sales)) == 1  # the training event gains its attendee, in place
    assert observed(calendar, l1.slug)[training.key].attendees == (sales,)
    assert sync_with(sales) == []  # a re-run writes nothing
    others = [e for k, e in observed(calendar, l1.slug).items() if k != training.key]
    assert all(e.attendees == () for e in others)


def test_writing_to_an_event_that_is_gone_fails_permanently(
    calendar: LaunchCalendar, l1: LaunchRequest, playbook: Playbook
) -> None:
    spec = plan_for(l1, playbook).calendar[0]
    ghost = CalendarEvent(key=spec.key, event_id=event_id(spec.key), launch_slug=l1.slug)
    with pytest.raises(PermanentError) as info:
        calendar.apply(CAL, UpdateEvent(spec, ghost, title=spec.title))
    assert info.value.status == 404
    with pytest.raises(PermanentError):
        calendar.apply(CAL, CancelEvent(ghost))
    assert calendar.observe(CAL, l1.slug) == []
