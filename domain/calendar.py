"""The launch calendar's diff: the plan's ``CalendarSpec`` entries against the events a calendar
adapter observed, as typed changes. Pure: no I/O, no clock, no vendor JSON.

Every planned entry is one all-day event (its end day is exclusive, as in Google Calendar and
RFC 5545) carrying its plan key, launch and activity as tags, with an id derived from the key.
The rules:

- an entry with no event is inserted (``InsertEvent``);
- an entry whose event drifted is updated, and only in what drifted (``UpdateEvent``): title,
  description, a moved day (a time someone set is cleared), tags, a missing attendee (the
  sales channel on the sales training; attendees people added stay), and a cancelled event is
  revived;
- an event whose entry the plan dropped (its activity is gone, or the tier changed) is
  cancelled, never deleted (``CancelEvent``), so raising the tier again revives it;
- everything else is kept (``KeepEvent``): an unchanged launch writes nothing;
- two events carrying one key (a copy someone made): the one with our id wins, else a live one
  over a cancelled one, else the first observed.

Each change reports the row the results table shows (``planned()``); a dry run reports those
rows and applies nothing.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Protocol

from tminus.domain.plan import CalendarSpec
from tminus.domain.results import ActionResult, Outcome

KIND = "calendar"


def event_id(key: str) -> str:
    """A calendar event id from a plan key: stable, and valid for Google Calendar (lowercase
    base32hex, a-v0-9, 40 characters) and as an iCalendar UID."""
    digest = hashlib.sha256(key.encode()).digest()
    return base64.b32hexencode(digest).decode().lower().rstrip("=")[:40]


def end_day(day: date) -> date:
    """The exclusive end of an all-day event on ``day``."""
    return day + timedelta(days=1)


@dataclass(frozen=True)
class CalendarEvent:
    """An event as a calendar adapter observed it.

    ``start``/``end`` are the all-day dates (the end exclusive); ``start_time``/``end_time``
    the time, as the calendar wrote it, when someone made the event a timed one. ``key``,
    ``launch_slug`` and ``activity_key`` are the event's tags ("" or None when it has none).
    """

    key: str
    event_id: str
    title: str = ""
    description: str = ""
    start: date | None = None
    end: date | None = None
    start_time: str | None = None
    end_time: str | None = None
    launch_slug: str | None = None
    activity_key: str | None = None
    cancelled: bool = False
    url: str | None = None
    attendees: tuple[str, ...] = ()  # email addresses


@dataclass(frozen=True)
class EventTags:
    """The tags that tie an event to its plan entry."""

    launch_slug: str
    key: str
    activity_key: str


def tags_for(spec: CalendarSpec, launch_slug: str) -> EventTags:
    return EventTags(launch_slug=launch_slug, key=spec.key, activity_key=spec.activity_key)


def _row(
    key: str,
    title: str,
    outcome: Outcome,
    detail: str = "",
    url: str | None = None,
    event: str | None = None,
    day: date | None = None,
) -> ActionResult:
    extra = {} if event is None else {"event_id": event}
    if day is not None:
        extra["day"] = day.isoformat()
    return ActionResult(
        key=key, kind=KIND, title=title, outcome=outcome, url=url, detail=detail, extra=extra
    )


@dataclass(frozen=True)
class InsertEvent:
    """A planned entry with no event yet: one all-day event, with the id its key gives."""

    spec: CalendarSpec
    launch_slug: str
    attendees: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def event_id(self) -> str:
        return event_id(self.spec.key)

    @property
    def tags(self) -> EventTags:
        return tags_for(self.spec, self.launch_slug)

    def planned(self) -> ActionResult:
        day = self.spec.day
        detail = f"all day on {day.isoformat()}"
        return _row(
            self.key, self.spec.title, Outcome.created, detail, event=self.event_id, day=day
        )


@dataclass(frozen=True)
class UpdateEvent:
    """A planned entry whose event drifted: only the fields set here are written.

    ``start``/``end``: the new all-day dates (a time on that side is cleared). ``tags``: all
    three tags, rewritten. ``revive``: the event was cancelled and is planned again.
    ``attendees``: the whole new list (the event's own, plus the ones the plan invites).
    """

    spec: CalendarSpec
    before: CalendarEvent
    title: str | None = None
    description: str | None = None
    start: date | None = None
    end: date | None = None
    tags: EventTags | None = None
    revive: bool = False
    attendees: tuple[str, ...] | None = None

    @property
    def key(self) -> str:
        return self.spec.key

    def changed(self) -> list[str]:
        """What drifted, in words, for the results table."""
        names = ["revived"] if self.revive else []
        if self.title is not None:
            names.append("title")
        if self.description is not None:
            names.append("description")
        if self.start is not None or self.end is not None:
            before = self.before
            was = before.start.isoformat() if before.start else before.start_time or "?"
            names.append(f"date {was} -> {self.spec.day.isoformat()}")
        if self.tags is not None:
            names.append("properties")
        if self.attendees is not None:
            names.append("attendees")
        return names

    def planned(self) -> ActionResult:
        detail = "changed: " + ", ".join(self.changed())
        before = self.before
        return _row(
            self.key,
            self.spec.title,
            Outcome.updated,
            detail,
            url=before.url,
            event=before.event_id,
            day=self.spec.day,
        )


@dataclass(frozen=True)
class CancelEvent:
    """An event whose entry the plan no longer has: cancelled (revivable), never deleted."""

    event: CalendarEvent

    @property
    def key(self) -> str:
        return self.event.key

    def planned(self) -> ActionResult:
        event = self.event
        detail = "no longer planned: cancelled"
        title = event.title or self.key
        return _row(self.key, title, Outcome.closed, detail, url=event.url, event=event.event_id)


@dataclass(frozen=True)
class KeepEvent:
    """Nothing to write: the event matches its entry, or is unplanned and already cancelled."""

    key: str
    title: str
    event: CalendarEvent
    detail: str = ""
    day: date | None = None

    def planned(self) -> ActionResult:
        event = self.event
        return _row(
            self.key,
            self.title,
            Outcome.unchanged,
            self.detail,
            url=event.url,
            event=event.event_id,
            day=self.day,
        )


@dataclass(frozen=True)
class SkipEvent:
    """A planned entry no calendar can take (none is configured): reported, never written."""

    spec: CalendarSpec
    reason: str

    @property
    def key(self) -> str:
        return self.spec.key

    def planned(self) -> ActionResult:
        return _row(self.key, self.spec.title, Outcome.skipped, self.reason)


CalendarChange = InsertEvent | UpdateEvent | CancelEvent | KeepEvent | SkipEvent


class LaunchCalendar(Protocol):
    """The port every launch calendar implements (Google Calendar, the in-memory fake, ...).

    ``observe`` reads only: every event tagged with the launch, cancelled ones too.
    ``apply`` writes one change and returns its row; an insert whose id is taken adopts that
    event (``adopt``), so inserting twice leaves one event. ``skip_reason``: why this calendar
    takes no changes (every entry is then skipped), or None.
    """

    @property
    def skip_reason(self) -> str | None: ...

    def observe(self, calendar_id: str, launch_slug: str) -> list[CalendarEvent]: ...

    def apply(self, calendar_id: str, change: CalendarChange) -> ActionResult: ...

    def close(self) -> None:
        """Close kept-alive connections (the next call opens new ones)."""
        ...


# --- the diff ---------------------------------------------------------------------------------


def _text(value: str | None) -> str:
    """Compare texts as Calendar keeps them (it may drop a trailing newline or use CRLF)."""
    return (value or "").replace("\r\n", "\n").strip()


def invited(spec: CalendarSpec, sales_email: str | None) -> tuple[str, ...]:
    """Who the plan invites to an entry's event: the sales channel, on the sales training."""
    return (sales_email,) if spec.invite_sales and sales_email else ()


def missing_attendees(event: CalendarEvent, wanted: Sequence[str]) -> tuple[str, ...] | None:
    """The event's attendees plus those of ``wanted`` it lacks; None when it lacks none.
    Attendees people added stay: tminus only adds its own."""
    have = {a.casefold() for a in event.attendees}
    new = [a for a in wanted if a.casefold() not in have]
    return (*event.attendees, *new) if new else None


def diff_event(
    spec: CalendarSpec, launch_slug: str, event: CalendarEvent, attendees: Sequence[str] = ()
) -> KeepEvent | UpdateEvent:
    """What brings ``event`` back to ``spec``: only the fields that drifted, or nothing.
    ``attendees``: who the plan invites (``invited``)."""
    day, end = spec.day, end_day(spec.day)
    tags = tags_for(spec, launch_slug)
    update = UpdateEvent(
        spec=spec,
        before=event,
        title=spec.title if _text(event.title) != _text(spec.title) else None,
        description=(
            spec.description if _text(event.description) != _text(spec.description) else None
        ),
        start=day if event.start != day or event.start_time is not None else None,
        end=end if event.end != end or event.end_time is not None else None,
        tags=(
            tags
            if (event.launch_slug, event.key, event.activity_key)
            != (tags.launch_slug, tags.key, tags.activity_key)
            else None
        ),
        revive=event.cancelled,
        attendees=missing_attendees(event, attendees),
    )
    if update.changed():
        return update
    return KeepEvent(key=spec.key, title=spec.title, event=event, day=day)


def adopt(insert: InsertEvent, found: CalendarEvent) -> KeepEvent | UpdateEvent:
    """An insert whose event id was already taken (an earlier insert whose answer was lost, or
    an event someone made with our id): that event, brought to the entry."""
    change = diff_event(insert.spec, insert.launch_slug, found, insert.attendees)
    if isinstance(change, KeepEvent):
        return replace(change, detail="already on the calendar")
    return change


def _wins(key: str, event: CalendarEvent, kept: CalendarEvent) -> bool:
    """Two events with one key: keep ours (the id the key gives), else a live one."""
    ours = event_id(key)
    if kept.event_id == ours:
        return False
    return event.event_id == ours or (kept.cancelled and not event.cancelled)


def pick_events(observed: Iterable[CalendarEvent]) -> dict[str, CalendarEvent]:
    """One event per key (see ``_wins``); untagged events are not ours and are left out."""
    found: dict[str, CalendarEvent] = {}
    for event in observed:
        if not event.key:
            continue
        kept = found.get(event.key)
        if kept is None or _wins(event.key, event, kept):
            found[event.key] = event
    return found


def cancel(event: CalendarEvent) -> CancelEvent | KeepEvent:
    """An observed event the plan no longer has."""
    if event.cancelled:
        title = event.title or event.key
        return KeepEvent(event.key, title, event, detail="cancelled: no longer planned")
    return CancelEvent(event)


def diff_calendar(
    specs: Sequence[CalendarSpec],
    observed: Iterable[CalendarEvent],
    launch_slug: str,
    *,
    skip_reason: str | None = None,
    sales_email: str | None = None,
) -> list[CalendarChange]:
    """The changes that bring the launch's events to ``specs``: one per planned entry, in plan
    order, then one per unplanned event, by key. With ``skip_reason`` (no calendar to write
    to), every entry is skipped, saying why. ``sales_email``: the sales channel's address,
    invited to the entries that invite sales (unset: no attendee is added)."""
    if skip_reason is not None:
        return [SkipEvent(spec, skip_reason) for spec in specs]
    existing = pick_events(observed)
    changes: list[CalendarChange] = []
    for spec in specs:
        event = existing.get(spec.key)
        attendees = invited(spec, sales_email)
        if event is None:
            changes.append(InsertEvent(spec, launch_slug, attendees))
        else:
            changes.append(diff_event(spec, launch_slug, event, attendees))
    planned = {spec.key for spec in specs}
    changes += [cancel(existing[key]) for key in sorted(set(existing) - planned)]
    return changes
