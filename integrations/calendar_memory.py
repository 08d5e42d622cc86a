"""``MemoryCalendar``: the ``LaunchCalendar`` port in memory, for tests and demos.

It keeps events in a dict per calendar, by event id, and honours the same contract as the
Google adapter (``tests/contract/test_calendar_port.py`` runs one suite against both):
``observe`` returns the launch's events, cancelled ones too, in insertion order; ``apply``
writes one change; an insert whose id is taken adopts that event; updating or cancelling an
event that is not there fails as Google does (404).
"""

from __future__ import annotations

import threading
from dataclasses import replace

from tminus.domain.calendar import (
    CalendarChange,
    CalendarEvent,
    CancelEvent,
    InsertEvent,
    UpdateEvent,
    adopt,
    end_day,
)
from tminus.domain.results import ActionResult
from tminus.errors import PermanentError

SYSTEM = "Memory calendar"


class MemoryCalendar:
    """A launch calendar held in a dict: ``events[calendar_id][event_id]``."""

    skip_reason: str | None = None

    def __init__(self) -> None:
        self.events: dict[str, dict[str, CalendarEvent]] = {}
        self._lock = threading.Lock()  # apply runs in one task run per change, in threads

    def observe(self, calendar_id: str, launch_slug: str) -> list[CalendarEvent]:
        with self._lock:
            held = self.events.get(calendar_id, {})
            return [e for e in held.values() if e.launch_slug == launch_slug]

    def close(self) -> None:
        pass  # nothing open

    def apply(self, calendar_id: str, change: CalendarChange) -> ActionResult:
        with self._lock:
            return self._apply(self.events.setdefault(calendar_id, {}), calendar_id, change)

    def _apply(
        self, held: dict[str, CalendarEvent], calendar_id: str, change: CalendarChange
    ) -> ActionResult:
        row = change.planned()
        if isinstance(change, InsertEvent):
            found = held.get(change.event_id)
            if found is not None:
                return self._apply(held, calendar_id, adopt(change, found))
            spec, tags = change.spec, change.tags
            held[change.event_id] = CalendarEvent(
                key=tags.key,
                event_id=change.event_id,
                title=spec.title,
                description=spec.description,
                start=spec.day,
                end=end_day(spec.day),
                launch_slug=tags.launch_slug,
                activity_key=tags.activity_key,
                url=f"memory://{calendar_id}/{change.event_id}",
                attendees=change.attendees,
            )
            row.url = held[change.event_id].url
        elif isinstance(change, UpdateEvent):
            event = self._held(held, calendar_id, change.before.event_id, change.key)
            if change.title is not None:
                event = replace(event, title=change.title)
            if change.description is not None:
                event = replace(event, description=change.description)
            if change.start is not None:
                event = replace(event, start=change.start, start_time=None)
            if change.end is not None:
                event = replace(event, end=change.end, end_time=None)
            if change.tags is not None:
                tags = change.tags
                event = replace(
                    event,
                    key=tags.key,
                    launch_slug=tags.launch_slug,
                    activity_key=tags.activity_key,
                )
            if change.revive:
                event = replace(event, cancelled=False)
            if change.attendees is not None:
                event = replace(event, attendees=change.attendees)
            held[event.event_id] = event
            row.url = event.url
        elif isinstance(change, CancelEvent):
            event = self._held(held, calendar_id, change.event.event_id, change.key)
            held[event.event_id] = replace(event, cancelled=True)
        return row  # a KeepEvent or SkipEvent writes nothing

    @staticmethod
    def _held(
        held: dict[str, CalendarEvent], calendar_id: str, event_id: str, key: str
    ) -> CalendarEvent:
        try:
            return held[event_id]
        except KeyError:
            raise PermanentError(
                SYSTEM, "Not Found", status=404, resource=f"event {key} in {calendar_id}"
            ) from None
