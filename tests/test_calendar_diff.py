"""The launch calendar's diff (``domain.calendar``): pure, so every rule is checked directly."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from tests.conftest import TODAY
from tminus.domain.calendar import (
    CalendarEvent,
    CancelEvent,
    InsertEvent,
    KeepEvent,
    SkipEvent,
    UpdateEvent,
    adopt,
    diff_calendar,
    end_day,
    event_id,
    pick_events,
)
from tminus.domain.plan import CalendarSpec
from tminus.domain.planner import plan_launch
from tminus.domain.playbook import Playbook
from tminus.domain.request import LaunchRequest
from tminus.domain.results import Outcome, is_noop

SLUG = "x"
SPEC = CalendarSpec(
    key="x/calendar/launch-day",
    activity_key="launch-day",
    title="Launch day",
    description="It ships.\n",
    day=date(2027, 3, 16),
)


def on_calendar(spec: CalendarSpec, **changes: object) -> CalendarEvent:
    """The event a calendar holds for ``spec`` once it is applied, with ``changes``."""
    event = CalendarEvent(
        key=spec.key,
        event_id=event_id(spec.key),
        title=spec.title,
        description=spec.description,
        start=spec.day,
        end=end_day(spec.day),
        launch_slug=SLUG,
        activity_key=spec.activity_key,
        url=f"https://cal.example/{spec.key}",
    )
    return replace(event, **changes)  # type: ignore[arg-type]


def test_a_new_launch_inserts_every_entry_in_plan_order(
    l1: LaunchRequest, playbook: Playbook
) -> None:
    plan = plan_launch(l1, playbook, TODAY)
    changes = diff_calendar(plan.calendar, [], l1.slug)
    assert [c.key for c in changes] == [s.key for s in plan.calendar]
    assert all(isinstance(c, InsertEvent) for c in changes)
    row = changes[0].planned()
    spec = plan.calendar[0]
    assert (row.key, row.kind, row.title, row.outcome) == (
        spec.key,
        "calendar",
        spec.title,
        Outcome.created,
    )
    assert row.detail == f"all day on {spec.day.isoformat()}"
    assert row.extra == {"event_id": event_id(spec.key), "day": spec.day.isoformat()}
    assert row.url is None


def test_an_equal_event_is_kept_even_if_the_calendar_trimmed_its_text() -> None:
    event = on_calendar(SPEC, description="It ships.", title="Launch day\r\n")
    (change,) = diff_calendar([SPEC], [event], SLUG)
    assert isinstance(change, KeepEvent)
    row = change.planned()
    assert (row.outcome, row.detail, row.url) == (Outcome.unchanged, "", event.url)
    assert row.extra == {"event_id": event.event_id, "day": "2027-03-16"}


def test_only_what_drifted_is_updated_and_named_in_order() -> None:
    event = on_calendar(
        SPEC,
        title="Old",
        description="Old.",
        start=date(2027, 3, 9),
        end=date(2027, 3, 10),
        activity_key=None,
        cancelled=True,
    )
    (change,) = diff_calendar([SPEC], [event], SLUG)
    assert isinstance(change, UpdateEvent)
    assert (change.title, change.description) == (SPEC.title, SPEC.description)
    assert (change.start, change.end) == (date(2027, 3, 16), date(2027, 3, 17))
    assert change.tags is not None and change.tags.activity_key == "launch-day"
    assert change.revive
    row = change.planned()
    assert row.outcome is Outcome.updated
    assert row.detail == (
        "changed: revived, title, description, date 2027-03-09 -> 2027-03-16, properties"
    )
    assert (row.url, row.extra["event_id"]) == (event.url, event.event_id)

    (title_only,) = diff_calendar([SPEC], [on_calendar(SPEC, title="Old")], SLUG)
    assert isinstance(title_only, UpdateEvent)
    assert (title_only.description, title_only.start, title_only.end, title_only.tags) == (
        None,
        None,
        None,
        None,
    )
    assert title_only.planned().detail == "changed: title"


def test_a_time_someone_set_is_cleared_on_that_side_only() -> None:
    timed = on_calendar(SPEC, start=None, start_time="2027-03-16T09:00:00Z")
    (change,) = diff_calendar([SPEC], [timed], SLUG)
    assert isinstance(change, UpdateEvent)
    assert (change.start, change.end) == (SPEC.day, None)
    assert change.planned().detail == "changed: date 2027-03-16T09:00:00Z -> 2027-03-16"
    only_end = on_calendar(SPEC, end=date(2027, 3, 18))  # someone made it two days
    (change,) = diff_calendar([SPEC], [only_end], SLUG)
    assert isinstance(change, UpdateEvent)
    assert (change.start, change.end) == (None, date(2027, 3, 17))
    assert change.planned().detail == "changed: date 2027-03-16 -> 2027-03-16"
    nothing = on_calendar(SPEC, start=None, end=None)
    (change,) = diff_calendar([SPEC], [nothing], SLUG)
    assert isinstance(change, UpdateEvent)
    assert change.planned().detail == "changed: date ? -> 2027-03-16"


def test_unplanned_events_are_cancelled_after_the_plan_by_key() -> None:
    gone_b = on_calendar(SPEC.model_copy(update={"key": "x/calendar/b"}), title="")
    gone_a = on_calendar(SPEC.model_copy(update={"key": "x/calendar/a"}), title="Livestream")
    already = on_calendar(SPEC.model_copy(update={"key": "x/calendar/c"}), cancelled=True)
    changes = diff_calendar([SPEC], [gone_b, already, gone_a, on_calendar(SPEC)], SLUG)
    assert [c.key for c in changes] == [SPEC.key, "x/calendar/a", "x/calendar/b", "x/calendar/c"]
    assert isinstance(changes[1], CancelEvent) and isinstance(changes[2], CancelEvent)
    row = changes[1].planned()
    assert (row.title, row.outcome, row.detail) == (
        "Livestream",
        Outcome.closed,
        "no longer planned: cancelled",
    )
    assert row.extra == {"event_id": gone_a.event_id} and row.url == gone_a.url
    assert changes[2].planned().title == "x/calendar/b"  # no title: the key
    assert isinstance(changes[3], KeepEvent)
    row = changes[3].planned()
    assert (row.outcome, row.detail) == (Outcome.unchanged, "cancelled: no longer planned")
    assert row.extra == {"event_id": already.event_id}


def test_two_events_with_one_key_keep_ours_else_a_live_one() -> None:
    ours = on_calendar(SPEC)
    copy = on_calendar(SPEC, event_id="copy1", title="copy")
    live_copy = on_calendar(SPEC, event_id="copy2")
    assert pick_events([copy, ours])[SPEC.key] is ours
    assert pick_events([ours, copy])[SPEC.key] is ours
    cancelled_ours = replace(ours, cancelled=True)
    assert pick_events([live_copy, cancelled_ours])[SPEC.key] is cancelled_ours  # ours wins
    dead = replace(copy, cancelled=True)
    assert pick_events([dead, live_copy])[SPEC.key] is live_copy
    assert pick_events([live_copy, copy])[SPEC.key] is live_copy  # else the first
    assert pick_events([on_calendar(SPEC, key="")]) == {}  # untagged: not ours


def test_no_calendar_skips_every_entry_saying_why() -> None:
    changes = diff_calendar([SPEC], [on_calendar(SPEC, title="drifted")], SLUG, skip_reason="no")
    assert changes == [SkipEvent(SPEC, "no")]
    row = changes[0].planned()
    assert (row.key, row.kind, row.title, row.outcome, row.detail) == (
        SPEC.key,
        "calendar",
        SPEC.title,
        Outcome.skipped,
        "no",
    )
    assert is_noop(row) and row.extra == {}


def test_an_insert_whose_id_is_taken_adopts_the_event() -> None:
    insert = InsertEvent(SPEC, SLUG)
    kept = adopt(insert, on_calendar(SPEC))
    assert isinstance(kept, KeepEvent)
    assert (kept.planned().outcome, kept.planned().detail) == (
        Outcome.unchanged,
        "already on the calendar",
    )
    stray = on_calendar(SPEC, key="", launch_slug=None, activity_key=None, title="old")
    updated = adopt(insert, stray)
    assert isinstance(updated, UpdateEvent)
    assert updated.planned().detail == "changed: title, properties"


@pytest.mark.parametrize("example", ["l1", "l2", "l3"])
def test_a_plan_against_its_own_events_is_all_noops(
    example: str, playbook: Playbook, request: pytest.FixtureRequest
) -> None:
    launch: LaunchRequest = request.getfixturevalue(example)
    plan = plan_launch(launch, playbook, TODAY)
    events = [replace(on_calendar(s), launch_slug=launch.slug) for s in plan.calendar]
    changes = diff_calendar(plan.calendar, events, launch.slug)
    assert len(changes) == len(plan.calendar)
    assert all(isinstance(c, KeepEvent) for c in changes)


def test_event_ids_are_stable_and_valid() -> None:
    ids = {event_id(f"launch-{n}/calendar/launch-day") for n in range(200)}
    assert len(ids) == 200
    assert all(
        5 <= len(i) <= 1024 and set(i) <= set("0123456789abcdefghijklmnopqrstuv") for i in ids
    )
    assert event_id("a/calendar/b") == event_id("a/calendar/b")


TRAINING = SPEC.model_copy(
    update={
        "key": "x/calendar/sales-training",
        "activity_key": "sales-training",
        "invite_sales": True,
    }
)
SALES = "sales-channel@example.com"


def test_the_sales_training_invites_the_sales_channel_when_it_has_an_address() -> None:
    (insert,) = diff_calendar([TRAINING], [], SLUG, sales_email=SALES)
    assert isinstance(insert, InsertEvent) and insert.attendees == (SALES,)
    (plain,) = diff_calendar([SPEC], [], SLUG, sales_email=SALES)
    assert isinstance(plain, InsertEvent) and plain.attendees == ()  # only the training
    (unset,) = diff_calendar([TRAINING], [], SLUG)
    assert isinstance(unset, InsertEvent) and unset.attendees == ()


def test_a_missing_attendee_is_added_beside_the_ones_people_invited() -> None:
    event = on_calendar(TRAINING, attendees=("ada@example.com",))
    (update,) = diff_calendar([TRAINING], [event], SLUG, sales_email=SALES)
    assert isinstance(update, UpdateEvent)
    assert update.attendees == ("ada@example.com", SALES)
    assert update.changed() == ["attendees"]
    invited = on_calendar(TRAINING, attendees=("ada@example.com", SALES.upper()))
    (keep,) = diff_calendar([TRAINING], [invited], SLUG, sales_email=SALES)
    assert isinstance(keep, KeepEvent)
    # Unset later: the attendee stays (tminus cannot tell it from one a person added).
    (kept,) = diff_calendar([TRAINING], [invited], SLUG)
    assert isinstance(kept, KeepEvent)


def test_the_training_agenda_lists_features_selling_points_and_kit_links(
    l1: LaunchRequest, playbook: Playbook
) -> None:
    plan = plan_launch(l1, playbook, TODAY)
    (training,) = [s for s in plan.calendar if s.activity_key == "sales-training"]
    assert training.invite_sales
    assert [s.key for s in plan.calendar if s.invite_sales] == [training.key]
    agenda = training.description
    assert "Agenda\n1. Code Review Agent: " in agenda and "\n3. Questions from sales" in agenda
    assert "   - First review within minutes, on every merge request" in agenda
    assert "   Docs: http://127.0.0.1:4281/docs/review-policies" in agenda
    assert "- Blog post: http://127.0.0.1:4281/blog/code-review-agent" in agenda
    assert "Where: Sales all-hands" in agenda


def test_a_long_agenda_is_cut_to_what_google_keeps(l1: LaunchRequest, playbook: Playbook) -> None:
    feature = l1.features[0].model_copy(update={"selling_points": ["x" * 280] * 8})
    many = [feature.model_copy(update={"name": f"Feature {i}"}) for i in range(20)]
    plan = plan_launch(l1.model_copy(update={"features": many}), playbook, TODAY)
    (training,) = [s for s in plan.calendar if s.invite_sales]
    assert len(training.description) <= 8_000 and training.description.endswith("…")
