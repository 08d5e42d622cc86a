"""A local stand-in for the part of Google Calendar API v3 tminus uses: events of a calendar.

``/calendar/v3/calendars/{calendarId}/events`` list (privateExtendedProperty and
sharedExtendedProperty ``k=v`` filters, all must match; showDeleted; timeMin/timeMax;
maxResults with pageToken/nextPageToken) and insert (ids checked like Google's: 5-1024 chars
of a-v and 0-9; 409 ``duplicate`` for a taken id); ``.../events/{eventId}`` get, patch
(merge), update (replace) and delete (the event stays, ``status: cancelled``, as in Google).
Error bodies have Google's shape, ``{"error": {"errors": [{domain, reason, message}], code,
message}}``, so google-api-python-client retries and reports them as it does against Google.

``/calendar/?cal=<calendarId>`` is a read-only page of a calendar by date (what a PMM opens),
``/calendar/event?eid=...`` one event (every event's ``htmlLink``). Conveniences Google does
not have: calendars are created on first use, and any caller is allowed unless the store says
``require_auth`` (then a bearer token, any token, is needed).

Calendar-shaped faults (the shared ``/_sandbox/faults`` answer GitLab-shaped bodies): the next
N API calls can answer a Google error body, e.g. 403 ``rateLimitExceeded``, from Python
(``store.fail_next``) or over HTTP (``PUT /_sandbox/calendar/faults``).
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import html
import json
import re
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tminus_sandbox.store import SqliteStore

API_PREFIX = "/calendar/v3/"

SCHEMA = """
CREATE TABLE IF NOT EXISTS calendars (id TEXT PRIMARY KEY, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
  calendar_id TEXT NOT NULL, id TEXT NOT NULL, status TEXT NOT NULL, start_key TEXT NOT NULL,
  created_seq INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (calendar_id, id));
"""

EVENT_ID = re.compile(r"^[a-v0-9]{5,1024}$")
STATUSES = ("confirmed", "tentative", "cancelled")
# Fields the server owns: ignored in request bodies, as Google does.
READ_ONLY = frozenset(
    {"kind", "etag", "htmlLink", "created", "updated", "creator", "organizer", "iCalUID"}
)
DEFAULT_PAGE = 250
MAX_PAGE = 2500


@dataclass(frozen=True)
class ApiMethod:
    """One method of the discovery document's ``events`` resource this stand-in serves."""

    name: str
    http_method: str
    path: str  # relative to /calendar/v3/, as in the discovery document
    params: tuple[str, ...]  # query parameters honoured (beyond the path's)


API_METHODS: tuple[ApiMethod, ...] = (
    ApiMethod(
        "list",
        "GET",
        "calendars/{calendarId}/events",
        (
            "privateExtendedProperty",
            "sharedExtendedProperty",
            "showDeleted",
            "timeMin",
            "timeMax",
            "maxResults",
            "pageToken",
        ),
    ),
    ApiMethod("insert", "POST", "calendars/{calendarId}/events", ()),
    ApiMethod("get", "GET", "calendars/{calendarId}/events/{eventId}", ()),
    ApiMethod("patch", "PATCH", "calendars/{calendarId}/events/{eventId}", ()),
    ApiMethod("update", "PUT", "calendars/{calendarId}/events/{eventId}", ()),
    ApiMethod("delete", "DELETE", "calendars/{calendarId}/events/{eventId}", ()),
)
# Parameters every method accepts (the discovery document's top-level ``parameters``);
# google-api-python-client always sends ``alt=json``. Accepted and ignored.
GLOBAL_PARAMS = ("alt", "prettyPrint", "fields", "quotaUser")


# --- errors in Google's shape ---------------------------------------------------------------

_MESSAGES = {
    "rateLimitExceeded": "Rate Limit Exceeded",
    "userRateLimitExceeded": "User Rate Limit Exceeded",
    "backendError": "Backend Error",
    "forbidden": "Forbidden",
    "requiredAccessLevel": "You need to have writer access to this calendar.",
    "notFound": "Not Found",
    "duplicate": "The requested identifier already exists.",
    "deleted": "Resource has been deleted",
    "timeRangeEmpty": "The specified time range is empty.",
    "invalid": "Invalid Value",
    "required": "Required",
    "parseError": "Parse Error",
}
_DOMAINS = {
    "rateLimitExceeded": "usageLimits",
    "userRateLimitExceeded": "usageLimits",
    "timeRangeEmpty": "calendar",
}


class GoogleError(Exception):
    """An error answer: Google's JSON body and status."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str | None = None,
        *,
        location_type: str | None = None,
        location: str | None = None,
    ) -> None:
        self.status = status
        text = message or _MESSAGES.get(reason, reason)
        detail: dict[str, str] = {
            "domain": _DOMAINS.get(reason, "global"),
            "reason": reason,
            "message": text,
        }
        if location_type and location:
            detail.update(locationType=location_type, location=location)
        self.body = {"error": {"errors": [detail], "code": status, "message": text}}
        super().__init__(f"{status} {reason}: {text}")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _etag(body: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return f'"{int(digest[:13], 16)}"'


def html_eid(event_id: str, calendar_id: str) -> str:
    """The ``eid`` of an event's page: base64 of "<eventId> <calendarId>", as Google does."""
    raw = f"{event_id} {calendar_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_eid(eid: str) -> tuple[str, str] | None:
    try:
        raw = base64.urlsafe_b64decode(eid + "=" * (-len(eid) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    event_id, sep, calendar_id = raw.partition(" ")
    return (event_id, calendar_id) if sep and event_id and calendar_id else None


# --- the store ------------------------------------------------------------------------------


class GCalStore(SqliteStore):
    """The stand-in's calendars and events, in one SQLite file (or ``:memory:``)."""

    def __init__(self, path: str | Path, *, require_auth: bool = False) -> None:
        super().__init__(path, SCHEMA)
        self.require_auth = require_auth
        self._faults: list[tuple[int, str]] = []
        # Emails Google would have sent attendees (``sendUpdates=all``): (event id, address).
        self.invitations: list[tuple[str, str]] = []
        # As Google answers a service account without domain-wide delegation that invites
        # attendees (403 forbiddenForServiceAccounts); off: the caller is a delegated one.
        self.refuse_attendees = False

    def reset(self) -> None:
        """Forget every calendar, event and pending fault."""
        with self.tx() as db:
            db.execute("DELETE FROM events")
            db.execute("DELETE FROM calendars")
        with self._lock:
            self._faults.clear()
            self.invitations.clear()
        self.refuse_attendees = False

    def check_invitations(self, event: dict[str, Any]) -> None:
        """Refuse attendees as Google refuses them from an undelegated service account."""
        if self.refuse_attendees and event.get("attendees"):
            raise GoogleError(
                403,
                "forbiddenForServiceAccounts",
                "Service accounts cannot invite attendees without Domain-Wide Delegation of "
                "Authority.",
            )

    def notify(self, request: Request, event: dict[str, Any]) -> None:
        """Record the emails Google sends attendees when the caller asks for them."""
        if request.query_params.get("sendUpdates") == "all":
            with self._lock:
                self.invitations += [(event["id"], a["email"]) for a in event.get("attendees", [])]

    # --- faults ---

    def fail_next(self, count: int, status: int = 403, reason: str = "rateLimitExceeded") -> None:
        """Answer the next ``count`` API calls with Google's error body for ``reason``."""
        with self._lock:
            self._faults.extend([(status, reason)] * count)

    def pending_faults(self) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._faults)

    def take_fault(self) -> GoogleError | None:
        with self._lock:
            if not self._faults:
                return None
            status, reason = self._faults.pop(0)
        return GoogleError(status, reason)

    # --- data ---

    def ensure_calendar(self, db: sqlite3.Connection, calendar_id: str) -> None:
        db.execute(
            "INSERT OR IGNORE INTO calendars (id, created) VALUES (?, ?)", (calendar_id, _now())
        )

    def calendars(self) -> list[str]:
        with self.tx() as db:
            return [r["id"] for r in db.execute("SELECT id FROM calendars ORDER BY id")]

    def event(self, calendar_id: str, event_id: str) -> dict[str, Any]:
        with self.tx() as db:
            self.ensure_calendar(db, calendar_id)
            row = db.execute(
                "SELECT body FROM events WHERE calendar_id = ? AND id = ?", (calendar_id, event_id)
            ).fetchone()
        if row is None:
            raise GoogleError(404, "notFound")
        data: dict[str, Any] = json.loads(row["body"])
        return data

    def events(self, calendar_id: str) -> list[dict[str, Any]]:
        """Every event of a calendar, cancelled too, by start then creation."""
        with self.tx() as db:
            self.ensure_calendar(db, calendar_id)
            rows = db.execute(
                "SELECT body FROM events WHERE calendar_id = ? ORDER BY start_key, created_seq",
                (calendar_id,),
            ).fetchall()
        return [json.loads(r["body"]) for r in rows]

    def insert(self, calendar_id: str, event: dict[str, Any]) -> dict[str, Any]:
        with self.tx() as db:
            self.ensure_calendar(db, calendar_id)
            taken = db.execute(
                "SELECT 1 FROM events WHERE calendar_id = ? AND id = ?", (calendar_id, event["id"])
            ).fetchone()
            if taken:
                raise GoogleError(409, "duplicate")
            seq = db.execute("SELECT coalesce(max(created_seq), 0) + 1 FROM events").fetchone()[0]
            db.execute(
                "INSERT INTO events (calendar_id, id, status, start_key, created_seq, body) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    calendar_id,
                    event["id"],
                    event["status"],
                    _start_key(event),
                    seq,
                    json.dumps(event),
                ),
            )
        return event

    def replace(self, calendar_id: str, event: dict[str, Any]) -> dict[str, Any]:
        with self.tx() as db:
            db.execute(
                "UPDATE events SET status = ?, start_key = ?, body = ? "
                "WHERE calendar_id = ? AND id = ?",
                (event["status"], _start_key(event), json.dumps(event), calendar_id, event["id"]),
            )
        return event


# --- validation -----------------------------------------------------------------------------


def _when(value: Any, field: str) -> datetime:
    """An event time as an aware datetime (an all-day date is midnight UTC)."""
    if not isinstance(value, dict) or not (value.get("date") or value.get("dateTime")):
        raise GoogleError(400, "required", f"Missing {field} time.")
    if value.get("date") and value.get("dateTime"):
        raise GoogleError(400, "invalid", f"Invalid {field} time.")
    try:
        if value.get("date"):
            day = date.fromisoformat(str(value["date"]))
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(str(value["dateTime"]))
    except ValueError:
        raise GoogleError(400, "invalid", f"Invalid {field} time.") from None
    if moment.tzinfo is None:
        raise GoogleError(400, "invalid", f"Invalid {field} time.")
    return moment


def _start_key(event: dict[str, Any]) -> str:
    return _when(event.get("start"), "start").astimezone(UTC).isoformat()


def _check_event(event: dict[str, Any]) -> None:
    start = _when(event.get("start"), "start")
    end = _when(event.get("end"), "end")
    if ("date" in event["start"]) != ("date" in event["end"]):
        raise GoogleError(
            400, "invalid", "Start and end times must either both be date or both be dateTime."
        )
    if end <= start:
        raise GoogleError(400, "timeRangeEmpty")
    if event.get("status", "confirmed") not in STATUSES:
        raise GoogleError(400, "invalid", "Invalid value for: status")
    attendees = event.get("attendees")
    if attendees is not None:
        if not isinstance(attendees, list) or not all(
            isinstance(a, dict) and "@" in str(a.get("email") or "") for a in attendees
        ):
            raise GoogleError(400, "invalid", "Invalid attendee email.")
        for attendee in attendees:  # as Google answers: each invitee has a response
            attendee.setdefault("responseStatus", "needsAction")
    props = event.get("extendedProperties")
    if props is not None:
        if not isinstance(props, dict):
            raise GoogleError(400, "invalid", "Invalid value for: extendedProperties")
        for scope in ("private", "shared"):
            pairs = props.get(scope, {})
            if not isinstance(pairs, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in pairs.items()
            ):
                raise GoogleError(400, "invalid", f"Invalid value for: extendedProperties.{scope}")


def _merge(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Patch semantics: objects merge field by field, ``null`` clears, anything else replaces."""
    out = copy.deepcopy(current)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _time_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise GoogleError(
            400, "badRequest", "Bad Request", location_type="parameter", location=name
        )
    return moment


def _matches(event: dict[str, Any], scope: str, wanted: list[str]) -> bool:
    pairs = (event.get("extendedProperties") or {}).get(scope) or {}
    for item in wanted:
        name, sep, value = item.partition("=")
        if not sep or pairs.get(name) != value:
            return False
    return True


# --- the API --------------------------------------------------------------------------------


class GCalApi:
    """Route handlers; links point back at the host the client used."""

    def __init__(self, store: GCalStore) -> None:
        self.store = store

    @staticmethod
    def _base(request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}"

    @staticmethod
    async def _json(request: Request) -> dict[str, Any]:
        try:
            data = json.loads(await request.body() or b"{}")
        except ValueError:
            raise GoogleError(400, "parseError") from None
        if not isinstance(data, dict):
            raise GoogleError(400, "parseError")
        return data

    def _finish(
        self, event: dict[str, Any], calendar_id: str, base: str, *, created: str | None = None
    ) -> dict[str, Any]:
        """Fill the fields the server owns; the etag covers everything else."""
        event = {k: v for k, v in event.items() if k not in READ_ONLY}
        event.setdefault("status", "confirmed")
        now = _now()
        event.update(
            kind="calendar#event",
            htmlLink=f"{base}/calendar/event?eid={html_eid(event['id'], calendar_id)}",
            created=created or now,
            updated=now,
            creator={"email": calendar_id, "self": True},
            organizer={"email": calendar_id, "self": True},
            iCalUID=f"{event['id']}@google.com",
        )
        event["etag"] = _etag(event)
        return event

    async def list_events(self, request: Request) -> Response:
        calendar_id = request.path_params["calendarId"]
        q = request.query_params
        time_min = _time_param(request, "timeMin")
        time_max = _time_param(request, "timeMax")
        if time_min and time_max and time_max <= time_min:
            raise GoogleError(400, "timeRangeEmpty", location_type="parameter", location="timeMax")
        try:
            size = int(q.get("maxResults", DEFAULT_PAGE))
            offset = (
                int(base64.urlsafe_b64decode(q["pageToken"]).decode()) if "pageToken" in q else 0
            )
        except (ValueError, binascii.Error):
            raise GoogleError(400, "invalid") from None
        if size < 1:
            raise GoogleError(400, "invalid", "Invalid value for: maxResults")
        size = min(size, MAX_PAGE)
        show_deleted = q.get("showDeleted", "false").lower() == "true"
        private = q.getlist("privateExtendedProperty")
        shared = q.getlist("sharedExtendedProperty")

        def keep(event: dict[str, Any]) -> bool:
            if event.get("status") == "cancelled" and not show_deleted:
                return False
            if not (_matches(event, "private", private) and _matches(event, "shared", shared)):
                return False
            # timeMin bounds an event's end, timeMax its start (both exclusive), as in Google.
            if time_min and _when(event["end"], "end") <= time_min:
                return False
            return not (time_max and _when(event["start"], "start") >= time_max)

        items = [e for e in self.store.events(calendar_id) if keep(e)]
        page = items[offset : offset + size]
        body: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": _etag({"items": [e["etag"] for e in page]}),
            "summary": calendar_id,
            "updated": max((e["updated"] for e in items), default=_now()),
            "timeZone": "UTC",
            "accessRole": "owner",
            "defaultReminders": [],
            "items": page,
        }
        if offset + size < len(items):
            body["nextPageToken"] = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
        return JSONResponse(body)

    async def insert_event(self, request: Request) -> Response:
        calendar_id = request.path_params["calendarId"]
        event = await self._json(request)
        event_id = event.get("id")
        if event_id is None:
            event["id"] = uuid.uuid4().hex  # 0-9a-f: inside Google's a-v0-9 alphabet
        elif not isinstance(event_id, str) or not EVENT_ID.match(event_id):
            raise GoogleError(400, "invalid", "Invalid resource id value.")
        _check_event(event)
        self.store.check_invitations(event)
        stored = self.store.insert(
            calendar_id, self._finish(event, calendar_id, self._base(request))
        )
        self.store.notify(request, stored)
        return JSONResponse(stored)

    async def get_event(self, request: Request) -> Response:
        p = request.path_params
        return JSONResponse(self.store.event(p["calendarId"], p["eventId"]))

    async def _rewrite(self, request: Request, *, merge: bool) -> Response:
        calendar_id, event_id = request.path_params["calendarId"], request.path_params["eventId"]
        current = self.store.event(calendar_id, event_id)
        body = {k: v for k, v in (await self._json(request)).items() if k not in READ_ONLY}
        if body.get("id", event_id) != event_id:
            raise GoogleError(400, "invalid", "Invalid resource id value.")
        self.store.check_invitations(body)
        event = _merge(current, body) if merge else {**body, "id": event_id}
        _check_event(event)
        event["sequence"] = int(current.get("sequence", 0)) + 1
        finished = self._finish(event, calendar_id, self._base(request), created=current["created"])
        self.store.notify(request, finished)
        return JSONResponse(self.store.replace(calendar_id, finished))

    async def patch_event(self, request: Request) -> Response:
        return await self._rewrite(request, merge=True)

    async def update_event(self, request: Request) -> Response:
        return await self._rewrite(request, merge=False)

    async def delete_event(self, request: Request) -> Response:
        calendar_id, event_id = request.path_params["calendarId"], request.path_params["eventId"]
        current = self.store.event(calendar_id, event_id)
        if current.get("status") == "cancelled":
            raise GoogleError(410, "deleted")
        event = {**current, "status": "cancelled"}
        self.store.replace(
            calendar_id,
            self._finish(event, calendar_id, self._base(request), created=event["created"]),
        )
        return Response(status_code=204)

    def handlers(self) -> dict[str, Callable[[Request], Awaitable[Response]]]:
        return {
            "list": self.list_events,
            "insert": self.insert_event,
            "get": self.get_event,
            "patch": self.patch_event,
            "update": self.update_event,
            "delete": self.delete_event,
        }


def _unauthenticated() -> GoogleError:
    return GoogleError(
        401, "required", "Login Required.", location_type="header", location="Authorization"
    )


def _guard(
    store: GCalStore, handler: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            if store.require_auth and not request.headers.get("authorization", "").startswith(
                "Bearer "
            ):
                raise _unauthenticated()
            fault = store.take_fault()
            if fault is not None:
                raise fault
            return await handler(request)
        except GoogleError as exc:
            return JSONResponse(exc.body, status_code=exc.status)

    return endpoint


def gcal_routes(store: GCalStore) -> list[Route]:
    """The Calendar API under /calendar/v3/, its read-only pages and its fault switch."""
    api = GCalApi(store)
    handlers = api.handlers()
    routes = [
        Route(
            API_PREFIX.rstrip("/") + "/" + m.path,
            _guard(store, handlers[m.name]),
            methods=[m.http_method],
        )
        for m in API_METHODS
    ]
    return [*routes, *calendar_pages(store), *fault_routes(store)]


def fault_routes(store: GCalStore) -> list[Route]:
    """``PUT /_sandbox/calendar/faults`` ``{"count": 2, "status": 403, "reason": "..."}``."""

    async def faults(request: Request) -> Response:
        if request.method == "PUT":
            try:
                data = json.loads(await request.body() or b"{}")
                count, status = int(data.get("count", 1)), int(data.get("status", 403))
                reason = str(data.get("reason", "rateLimitExceeded"))
            except (ValueError, TypeError, AttributeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            if not (0 <= count <= 10_000 and 400 <= status <= 599):
                return JSONResponse({"error": "count 0-10000, status 400-599"}, status_code=400)
            store.fail_next(count, status, reason)
        pending = [{"status": s, "reason": r} for s, r in store.pending_faults()]
        return JSONResponse({"pending": pending})

    return [Route("/_sandbox/calendar/faults", faults, methods=["GET", "PUT"])]


# --- read-only HTML pages -------------------------------------------------------------------

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
td{{padding:.2rem .6rem;vertical-align:top}} .cancelled{{color:#888;text-decoration:line-through}}
pre{{white-space:pre-wrap;background:#f7f7f7;padding:1rem;border-radius:.4rem}}</style></head>
<body><p><small>tminus sandbox: a stand-in for Google Calendar</small></p>{body}</body></html>"""


def _esc(value: Any) -> str:
    return html.escape(str(value if value is not None else ""))


def _when_text(event: dict[str, Any]) -> str:
    start, end = event.get("start") or {}, event.get("end") or {}
    if start.get("date"):
        first = date.fromisoformat(start["date"])
        last = date.fromisoformat(end["date"]) - timedelta(days=1)  # end is exclusive
        return f"{first} (all day)" if last <= first else f"{first} to {last} (all day)"
    return f"{start.get('dateTime', '')} to {end.get('dateTime', '')}"


def calendar_pages(store: GCalStore) -> list[Route]:
    async def calendar_page(request: Request) -> Response:
        calendar_id = request.query_params.get("cal")
        if not calendar_id:
            items = "".join(
                f'<li><a href="?cal={_esc(quote(c, safe=""))}">{_esc(c)}</a></li>'
                for c in store.calendars()
            )
            body = f"<h1>Calendars</h1><ul>{items or '<li>none yet</li>'}</ul>"
            return HTMLResponse(_PAGE.format(title="Calendars", body=body))
        rows = []
        for event in store.events(calendar_id):
            css = ' class="cancelled"' if event.get("status") == "cancelled" else ""
            eid = quote(html_eid(event["id"], calendar_id), safe="")
            rows.append(
                f"<tr{css}><td>{_esc(_when_text(event))}</td>"
                f'<td><a href="event?eid={_esc(eid)}">{_esc(event.get("summary") or "(no title)")}'
                f"</a></td><td>{_esc(event.get('status'))}</td></tr>"
            )
        table = "".join(rows) or "<tr><td>no events</td></tr>"
        body = f"<h1>{_esc(calendar_id)}</h1><table>{table}</table>"
        return HTMLResponse(_PAGE.format(title=_esc(calendar_id), body=body))

    async def event_page(request: Request) -> Response:
        found = _parse_eid(request.query_params.get("eid", ""))
        try:
            if found is None:
                raise GoogleError(404, "notFound")
            event = store.event(found[1], found[0])
        except GoogleError:
            return HTMLResponse(_PAGE.format(title="Not found", body="<h1>Not found</h1>"), 404)
        calendar_id = found[1]
        props = (event.get("extendedProperties") or {}).get("private") or {}
        prop_rows = "".join(
            f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in sorted(props.items())
        )
        body = (
            f"<h1>{_esc(event.get('summary') or '(no title)')}</h1>"
            f"<p><b>{_esc(_when_text(event))}</b> · {_esc(event.get('status'))} · "
            f'on <a href="./?cal={_esc(quote(calendar_id, safe=""))}">{_esc(calendar_id)}</a></p>'
            f"<pre>{_esc(event.get('description') or '')}</pre>"
            + "".join(
                f"<p>Attendee: {_esc(a.get('email'))}</p>" for a in event.get("attendees") or []
            )
            + f"<table>{prop_rows}</table>"
        )
        return HTMLResponse(_PAGE.format(title=_esc(event.get("summary") or "event"), body=body))

    return [
        Route("/calendar/", calendar_page, methods=["GET"]),
        Route("/calendar/event", event_page, methods=["GET"]),
    ]
