"""The launch calendar as an iCalendar file (RFC 5545), for teams not on Google Calendar.

One VEVENT per planned calendar entry, all day (``DTEND`` is the day after: exclusive). The
UID is the Google Calendar event id plus ``@tminus``, so a calendar app that subscribed to the
file updates an entry when its date moves instead of adding a second one. The ``icalendar``
library does the RFC's CRLF line endings, 75-octet folding and text escaping.

Same plans and same ``now`` give the same bytes: events are sorted by day and key.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from icalendar import Calendar, Event

from tminus.domain.plan import CalendarSpec, Plan
from tminus.integrations.gcal import event_id

PRODID = "-//tminus//launch calendar//EN"
CALENDAR_NAME = "Launch calendar"


def event_uid(key: str) -> str:
    return f"{event_id(key)}@tminus"


def launch_calendar_ics(plans: list[Plan], now: datetime | None = None) -> bytes:
    """Every calendar entry of ``plans`` as one VCALENDAR.

    ``now`` becomes every event's DTSTAMP (default: the current time; a naive value is taken
    as UTC). A key planned twice (the same launch passed twice) appears once.
    """
    stamp = datetime.now(UTC) if now is None else now
    stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    entries: dict[str, tuple[CalendarSpec, str]] = {}
    for plan in plans:
        for spec in plan.calendar:
            entries.setdefault(spec.key, (spec, plan.request.tier.value))

    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", CALENDAR_NAME)
    for spec, tier in sorted(entries.values(), key=lambda e: (e[0].day, e[0].key)):
        event = Event()
        event.add("uid", event_uid(spec.key))
        event.add("dtstamp", stamp)
        event.add("dtstart", spec.day)
        event.add("dtend", spec.day + timedelta(days=1))
        event.add("summary", spec.title)
        event.add("description", spec.description)
        event.add("categories", [tier])
        event.add("transp", "TRANSPARENT")  # a launch entry does not make anyone busy
        cal.add_component(event)
    data: bytes = cal.to_ical()
    return data
