"""The iCalendar export: parsed back with icalendar, and checked byte by byte for RFC 5545."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from icalendar import Calendar

from tests.conftest import TODAY
from tminus.domain.plan import Plan
from tminus.domain.planner import plan_launch
from tminus.domain.playbook import Playbook
from tminus.domain.request import LaunchRequest
from tminus.integrations.gcal import event_id
from tminus.integrations.ics import PRODID, launch_calendar_ics

NOW = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)


def plan_for(request: LaunchRequest, playbook: Playbook, **changes: Any) -> Plan:
    return plan_launch(request.model_copy(update=changes), playbook, TODAY)


def with_entry(plan: Plan, **changes: Any) -> Plan:
    """The plan with its first calendar entry changed (texts no playbook has yet)."""
    first = plan.calendar[0].model_copy(update=changes)
    return plan.model_copy(update={"calendar": (first, *plan.calendar[1:])})


def events(data: bytes) -> dict[str, Any]:
    cal = Calendar.from_ical(data)
    return {str(e["UID"]): e for e in cal.walk("VEVENT")}


def test_one_all_day_event_per_calendar_entry(
    l1: LaunchRequest, l2: LaunchRequest, l3: LaunchRequest, playbook: Playbook
) -> None:
    plans = [plan_for(r, playbook) for r in (l1, l2, l3)]
    data = launch_calendar_ics(plans, now=NOW)
    cal = Calendar.from_ical(data)
    assert str(cal["PRODID"]) == PRODID == "-//tminus//launch calendar//EN"
    assert str(cal["VERSION"]) == "2.0"
    assert str(cal["X-WR-CALNAME"]) == "Launch calendar"
    found = events(data)
    specs = [(spec, plan) for plan in plans for spec in plan.calendar]
    assert len(found) == len(specs) == 3 + 2 + 1  # L1, L2, L3 (launch day only)
    for spec, plan in specs:
        event = found[f"{event_id(spec.key)}@tminus"]
        start, end = event.decoded("DTSTART"), event.decoded("DTEND")
        assert type(start) is date and start == spec.day  # a date: all day
        assert type(end) is date and end == spec.day + timedelta(days=1)  # exclusive
        assert str(event["SUMMARY"]) == spec.title
        assert str(event["DESCRIPTION"]) == spec.description
        assert event.decoded("DTSTAMP") == NOW
        assert event["CATEGORIES"].cats == [plan.request.tier.value]
    assert b"DTSTART;VALUE=DATE:20270316\r\n" in data


def test_rfc5545_lines_crlf_and_folded(l1: LaunchRequest, playbook: Playbook) -> None:
    long = "Sales training: " + "the agent reviews every merge request, é ✓ " * 12
    plan = with_entry(plan_for(l1, playbook), description=long)
    data = launch_calendar_ics([plan], now=NOW)
    assert data.endswith(b"\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")  # no bare line feeds
    lines = data.split(b"\r\n")[:-1]
    assert max(len(line) for line in lines) <= 75  # octets, multibyte characters included
    assert any(line.startswith(b" ") for line in lines)  # the description was folded
    for line in lines:
        line.decode("utf-8")  # folding never splits a character
    event = events(data)[f"{event_id(plan.calendar[0].key)}@tminus"]
    assert str(event["DESCRIPTION"]) == long


def test_text_is_escaped(l1: LaunchRequest, playbook: Playbook) -> None:
    title = "Launch day: Review, fix; ship \\ done"
    description = "First line, with a comma; and a semicolon\nSecond line"
    plan = with_entry(plan_for(l1, playbook), title=title, description=description)
    data = launch_calendar_ics([plan], now=NOW)
    assert b"SUMMARY:Launch day: Review\\, fix\\; ship \\\\ done\r\n" in data
    assert b"DESCRIPTION:First line\\, with a comma\\; and a semicolon\\nSecond line" in data
    event = events(data)[f"{event_id(plan.calendar[0].key)}@tminus"]
    assert (str(event["SUMMARY"]), str(event["DESCRIPTION"])) == (title, description)


def test_exports_are_byte_identical_and_uids_stable(
    l1: LaunchRequest, l3: LaunchRequest, playbook: Playbook
) -> None:
    a, b = plan_for(l1, playbook), plan_for(l3, playbook)
    first = launch_calendar_ics([a, b], now=NOW)
    assert launch_calendar_ics([a, b], now=NOW) == first
    assert launch_calendar_ics([b, a], now=NOW) == first  # sorted by day and key
    assert launch_calendar_ics([a, a, b], now=NOW) == first  # a key appears once
    moved = plan_for(l1, playbook, launch_date=l1.launch_date + timedelta(days=7))
    assert set(events(launch_calendar_ics([moved], now=NOW))) == set(
        events(launch_calendar_ics([a], now=NOW))
    )  # a moved launch updates subscribers' entries instead of adding new ones


def test_no_plans_is_an_empty_calendar() -> None:
    cal = Calendar.from_ical(launch_calendar_ics([], now=NOW))
    assert cal.walk("VEVENT") == [] and str(cal["X-WR-CALNAME"]) == "Launch calendar"


def test_dtstamp_from_naive_now(l3: LaunchRequest, playbook: Playbook) -> None:
    data = launch_calendar_ics([plan_for(l3, playbook)], now=datetime(2026, 11, 22, 9, 30))
    assert b"DTSTAMP:20261122T093000Z\r\n" in data
