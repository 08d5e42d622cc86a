"""Google Calendar, through google-api-python-client: the only module that talks to Calendar.

``CalendarAdapter`` is the ``LaunchCalendar`` port (``domain.calendar``) on Google Calendar: it
*observes* a launch's events and *applies* one change at a time; the diff between the two is
the domain's. Google's JSON stays here: an event carries its tags in
``extendedProperties.private`` (``tminus_launch``, ``tminus_key``, ``tminus_activity``) and
has an id derived from its key, so ``observe`` finds the launch's events in Calendar itself
(one ``events.list`` filtered on the launch, cancelled ones too), and ``apply`` inserts, patches
only what drifted, or cancels (never deletes). An unchanged launch sends no write.

Resilience: ``execute()`` runs with its own retries off (``num_retries=0``); each call goes
through one ``RetryPolicy`` (``integrations.retry``), which retries 5xx, 429 and 403 rate-limit
answers and dropped connections, bounded, honouring ``Retry-After``. Every call may be repeated:
inserts carry an id derived from the key, so a repeat answers 409 duplicate, and the adapter
adopts the event that holds the id. Errors leave this module as ``TransientError`` or
``PermanentError`` carrying Google's own message.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, urlsplit

import google.auth.exceptions
import google_auth_httplib2
import httplib2
from google.auth.credentials import AnonymousCredentials, Credentials
from google.oauth2 import credentials as oauth2_credentials
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from tminus.domain.calendar import (
    CalendarChange,
    CalendarEvent,
    CancelEvent,
    EventTags,
    InsertEvent,
    LaunchCalendar,
    UpdateEvent,
    adopt,
    end_day,
)
from tminus.domain.results import ActionResult, Outcome
from tminus.errors import PermanentError, SettingsError, TransientError
from tminus.integrations.retry import RetryPolicy, parse_retry_after, retry_policy

if TYPE_CHECKING:
    from tminus.settings import Settings

SYSTEM = "Google Calendar"
# Events only: enough to list, insert and patch events of a calendar shared with the account.
SCOPE = "https://www.googleapis.com/auth/calendar.events"
GOOGLE_WEB = "https://calendar.google.com/calendar/embed"
LAUNCH_PROP = "tminus_launch"
KEY_PROP = "tminus_key"
ACTIVITY_PROP = "tminus_activity"
PAGE_SIZE = 250

_RATE_LIMIT_REASONS = ("rateLimitExceeded", "userRateLimitExceeded")
_HINTS = {
    401: "check the service-account credentials (TMINUS_GCAL_CREDENTIALS_FILE or "
    "TMINUS_GCAL_SECRET_BLOCK)",
    403: "share the calendar with the service account's email, with 'Make changes to events'",
    404: "check TMINUS_CALENDAR_ID, and that the calendar is shared with the service account",
}

log = logging.getLogger("tminus")


# --- errors -----------------------------------------------------------------------------------


def google_error(exc: HttpError) -> tuple[str | None, str]:
    """(reason, message) from Google's JSON error body; a proxy's text body works too."""
    content = exc.content or b""
    try:
        data = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        errors = err.get("errors") or []
        reason = errors[0].get("reason") if errors and isinstance(errors[0], dict) else None
        message = str(err.get("message") or reason or "no message")
        return (str(reason) if reason else err.get("status")), message
    if isinstance(data, dict) and data.get("message"):
        return None, str(data["message"])
    text = content.decode("utf-8", errors="replace").strip()[:200]
    return None, text or str(getattr(exc.resp, "reason", "") or "no message")


def _transient(status: int, reason: str | None) -> bool:
    return (
        status in (408, 429) or status >= 500 or (status == 403 and reason in _RATE_LIMIT_REASONS)
    )


@contextmanager
def translate(resource: str) -> Iterator[None]:
    """Turn google-api-python-client, google-auth and socket errors into tminus errors."""
    try:
        yield
    except HttpError as exc:
        status = int(exc.resp.status)
        reason, message = google_error(exc)
        if status in _HINTS and not _transient(status, reason):
            message = f"{message} ({_HINTS[status]})"
        if _transient(status, reason):
            raise TransientError(
                SYSTEM,
                message,
                status=status,
                resource=resource,
                retry_after=parse_retry_after(exc.resp.get("retry-after")),
                sent=status >= 500 or status == 408,
            ) from exc
        raise PermanentError(SYSTEM, message, status=status, resource=resource) from exc
    except google.auth.exceptions.TransportError as exc:
        raise TransientError(
            SYSTEM, f"cannot reach Google's auth service ({type(exc).__name__})", resource=resource
        ) from exc
    except google.auth.exceptions.GoogleAuthError as exc:
        raise PermanentError(
            SYSTEM, f"credentials refused ({type(exc).__name__}); {_HINTS[401]}", resource=resource
        ) from exc
    except (OSError, httplib2.HttpLib2Error) as exc:
        # Refused or reset connections, timeouts, DNS failures.
        raise TransientError(
            SYSTEM,
            f"cannot reach Google Calendar ({type(exc).__name__})",
            resource=resource,
            sent=not isinstance(exc, ConnectionRefusedError),
        ) from exc


# --- Google's JSON and the domain's events -----------------------------------------------------


def _day(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _tag(value: Any) -> str | None:
    return str(value) if value is not None else None


def observed_event(event: dict[str, Any]) -> CalendarEvent:
    """A Calendar event as the domain sees it (its tags are in ``extendedProperties``)."""
    private = (event.get("extendedProperties") or {}).get("private") or {}
    start, end = event.get("start") or {}, event.get("end") or {}
    return CalendarEvent(
        key=str(private.get(KEY_PROP) or ""),
        event_id=str(event.get("id") or ""),
        title=str(event.get("summary") or ""),
        description=str(event.get("description") or ""),
        start=_day(start.get("date")),
        end=_day(end.get("date")),
        start_time=_tag(start.get("dateTime")),
        end_time=_tag(end.get("dateTime")),
        launch_slug=_tag(private.get(LAUNCH_PROP)),
        activity_key=_tag(private.get(ACTIVITY_PROP)),
        cancelled=event.get("status") == "cancelled",
        url=_tag(event.get("htmlLink")),
        attendees=tuple(
            str(a["email"])
            for a in event.get("attendees") or []
            if isinstance(a, dict) and a.get("email")
        ),
    )


def private_properties(tags: EventTags) -> dict[str, str]:
    return {LAUNCH_PROP: tags.launch_slug, KEY_PROP: tags.key, ACTIVITY_PROP: tags.activity_key}


def insert_body(change: InsertEvent) -> dict[str, Any]:
    """The insert body: an all-day event (the end date is exclusive), shown as free time."""
    spec = change.spec
    return {
        "id": change.event_id,
        "summary": spec.title,
        "description": spec.description,
        "start": {"date": spec.day.isoformat()},
        "end": {"date": end_day(spec.day).isoformat()},
        "transparency": "transparent",
        "extendedProperties": {"private": private_properties(change.tags)},
        **({"attendees": [{"email": a} for a in change.attendees]} if change.attendees else {}),
    }


def _all_day(day: date, timed: bool) -> dict[str, Any]:
    # Patch merges objects: clear a time someone set, or the event would have both.
    out: dict[str, Any] = {"date": day.isoformat()}
    if timed:
        out["dateTime"] = None
        out["timeZone"] = None
    return out


def patch_body(change: UpdateEvent) -> dict[str, Any]:
    """The patch body: only the fields that drifted."""
    before = change.before
    patch: dict[str, Any] = {}
    if change.title is not None:
        patch["summary"] = change.title
    if change.description is not None:
        patch["description"] = change.description
    if change.start is not None:
        patch["start"] = _all_day(change.start, before.start_time is not None)
    if change.end is not None:
        patch["end"] = _all_day(change.end, before.end_time is not None)
    if change.tags is not None:
        patch["extendedProperties"] = {"private": private_properties(change.tags)}
    if change.revive:
        patch["status"] = "confirmed"
    if change.attendees is not None:
        patch["attendees"] = [{"email": a} for a in change.attendees]
    return patch


NOT_INVITED = (
    "; attendees not invited: Google refuses invitations from a service account without "
    "domain-wide delegation (set TMINUS_GCAL_SUBJECT)"
)


def _no_invitations(exc: PermanentError) -> bool:
    """Google's refusal of attendees from a service account without delegation."""
    cause = exc.__cause__
    return isinstance(cause, HttpError) and google_error(cause)[0] == "forbiddenForServiceAccounts"


def _notify(attendees: Any) -> dict[str, str]:
    """Google emails attendees only when asked: an event with attendees (the sales channel
    on the sales training) sends them the invitation, and the update when it moves."""
    return {"sendUpdates": "all"} if attendees else {}


# --- the adapter ------------------------------------------------------------------------------


class CalendarAdapter:
    """``LaunchCalendar`` on Google Calendar (or the stand-in), via the real API client.

    Calls are serialized: the underlying httplib2 connection is not thread-safe.
    """

    skip_reason: str | None = None

    def __init__(
        self,
        service: Any,
        *,
        retry: RetryPolicy | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._service = service
        self._events = service.events()
        self._retry = retry or RetryPolicy()
        self._page_size = page_size
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the client's kept-alive connections (the next call opens new ones)."""
        with self._lock:
            self._service.close()

    def _execute(self, request: Any, resource: str) -> dict[str, Any]:
        def attempt() -> dict[str, Any]:
            with self._lock, translate(resource):
                return dict(request.execute(num_retries=0) or {})

        return self._retry.call(attempt)

    def observe(self, calendar_id: str, launch_slug: str) -> list[CalendarEvent]:
        """Every event of the launch, cancelled ones too, read from Calendar itself (one
        ``events.list`` filtered on the launch, page by page). Its errors are raised: nothing
        should act on a partial view."""
        found: list[CalendarEvent] = []
        first_id: dict[str, str] = {}
        token: str | None = None
        resource = f"events of calendar {calendar_id}"
        while True:
            page = self._execute(
                self._events.list(
                    calendarId=calendar_id,
                    privateExtendedProperty=f"{LAUNCH_PROP}={launch_slug}",
                    showDeleted=True,
                    maxResults=self._page_size,
                    pageToken=token,
                ),
                resource,
            )
            for item in page.get("items") or []:
                event = observed_event(item)
                if event.key in first_id:
                    # A copy someone made; the diff decides which one counts.
                    log.warning(
                        "Calendar events %s and %s both carry key %s",
                        first_id[event.key],
                        event.event_id,
                        event.key,
                    )
                elif event.key:
                    first_id[event.key] = event.event_id
                found.append(event)
            token = page.get("nextPageToken")
            if not token:
                return found

    def apply(self, calendar_id: str, change: CalendarChange) -> ActionResult:
        """Write one change: insert, patch what drifted, or cancel (never delete)."""
        row = change.planned()
        resource = f"event {change.key} in calendar {calendar_id}"
        if isinstance(change, InsertEvent):
            return self._insert(calendar_id, change, resource)
        if isinstance(change, UpdateEvent):
            body = patch_body(change)
            try:
                self._patch(calendar_id, change, body, resource, row)
            except PermanentError as exc:
                if not (_no_invitations(exc) and "attendees" in body):
                    raise
                body.pop("attendees")
                row.detail += NOT_INVITED
                if not body:
                    row.outcome = Outcome.skipped
                    return row
                self._patch(calendar_id, change, body, resource, row)
        elif isinstance(change, CancelEvent):
            self._execute(
                self._events.patch(
                    calendarId=calendar_id,
                    eventId=change.event.event_id,
                    body={"status": "cancelled"},
                    **_notify(change.event.attendees),  # the invited hear it is off
                ),
                resource,
            )
        return row  # a KeepEvent or SkipEvent writes nothing

    def _patch(
        self,
        calendar_id: str,
        change: UpdateEvent,
        body: dict[str, Any],
        resource: str,
        row: ActionResult,
    ) -> None:
        # Attendees hear of a move, a revival or their invitation, not of edits to the text or
        # tminus's properties.
        moved = change.start or change.end or change.revive or "attendees" in body
        patched = self._execute(
            self._events.patch(
                calendarId=calendar_id,
                eventId=change.before.event_id,
                body=body,
                **_notify((change.attendees or change.before.attendees) if moved else ()),
            ),
            resource,
        )
        row.url = patched.get("htmlLink") or row.url

    def _insert(self, calendar_id: str, change: InsertEvent, resource: str) -> ActionResult:
        # A retry of an insert (the retry policy's, on a 5xx or a dropped connection, or a
        # re-run) may follow an insert that happened but whose answer was lost. The id is
        # derived from the key, so the repeat answers 409 duplicate instead of creating a
        # second event: inserting twice can never duplicate.
        body = insert_body(change)
        note = ""
        try:
            created = self._execute_insert(calendar_id, body, resource)
        except PermanentError as exc:
            if not (_no_invitations(exc) and body.get("attendees")):
                raise
            # Google lets a service account invite people only with domain-wide delegation
            # (TMINUS_GCAL_SUBJECT): the event is still worth having, without the invitation.
            body = {k: v for k, v in body.items() if k != "attendees"}
            created = self._execute_insert(calendar_id, body, resource)
            note = NOT_INVITED
        if created is not None:
            row = change.planned()
            row.url = created.get("htmlLink")
            row.detail += note
            return row
        # The id is taken (the list lagged, or the lost answer above): adopt that event.
        found = self._execute(
            self._events.get(calendarId=calendar_id, eventId=change.event_id), resource
        )
        return self.apply(calendar_id, adopt(change, observed_event(found)))

    def _execute_insert(
        self, calendar_id: str, body: dict[str, Any], resource: str
    ) -> dict[str, Any] | None:
        """Insert; None when the id is taken (409 duplicate)."""
        request = self._events.insert(
            calendarId=calendar_id, body=body, **_notify(body.get("attendees"))
        )
        try:
            return self._execute(request, resource)
        except PermanentError as exc:
            cause = exc.__cause__
            if (
                exc.status == 409
                and isinstance(cause, HttpError)
                and google_error(cause)[0] == "duplicate"
            ):
                return None
            raise


class NoCalendar:
    """No launch calendar is configured (a team not on Google): every entry is skipped, and the
    launch goes on. ``tminus calendar export`` still gives them the feed."""

    REASON = (
        "no launch calendar configured (set TMINUS_GCAL_CREDENTIALS_FILE or "
        "TMINUS_GCAL_SECRET_BLOCK, or use `tminus calendar export`)"
    )
    skip_reason: str | None = REASON

    def observe(self, calendar_id: str, launch_slug: str) -> list[CalendarEvent]:
        return []  # it holds nothing

    def apply(self, calendar_id: str, change: CalendarChange) -> ActionResult:
        return replace(change.planned(), outcome=Outcome.skipped, detail=self.REASON)

    def close(self) -> None:
        pass  # nothing open


class UnconfiguredCalendar:
    """Stands in for a Calendar configured wrongly: says what to fix, writes nothing."""

    skip_reason: str | None = None

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def observe(self, calendar_id: str, launch_slug: str) -> list[CalendarEvent]:
        raise SettingsError("Google Calendar settings", [self.reason])

    def apply(self, calendar_id: str, change: CalendarChange) -> ActionResult:
        raise SettingsError("Google Calendar settings", [self.reason])

    def close(self) -> None:
        pass  # nothing open


# --- building clients (secrets are unwrapped only here) --------------------------------------


def api_endpoint(endpoint: str) -> str:
    """``http://host:port`` or ``.../calendar/v3`` -> ``.../calendar/v3/`` (what build() needs)."""
    base = endpoint.rstrip("/")
    if not base.endswith("/calendar/v3"):
        base += "/calendar/v3"
    return base + "/"


def calendar_page_url(endpoint: str | None, calendar_id: str) -> str:
    """A page showing the whole calendar: Google's, or the stand-in's ``/calendar/``."""
    if endpoint is None:
        return f"{GOOGLE_WEB}?src={quote(calendar_id, safe='')}"
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}/calendar/?cal={quote(calendar_id, safe='')}"


def service_account_credentials(info: dict[str, Any], source: str) -> Credentials:
    """Self-signed JWT credentials (``always_use_jwt_access``: no token exchange call)."""
    try:
        creds: Credentials = service_account.Credentials.from_service_account_info(
            info, scopes=[SCOPE], always_use_jwt_access=True
        )
    except (ValueError, KeyError, TypeError) as exc:
        # Never the exception's text: it may quote the key. Field names only.
        missing = sorted(f for f in ("client_email", "private_key", "token_uri") if not info.get(f))
        what = f"missing {', '.join(missing)}" if missing else "the private key cannot be read"
        raise SettingsError(
            source, [f"not a usable service-account key ({what}; {type(exc).__name__})"]
        ) from None
    return creds


def load_service_account_info(block_name: str) -> dict[str, Any]:
    """The service-account JSON kept in a Prefect Secret block (a dict or a JSON string)."""
    from prefect.blocks.system import Secret

    source = f"Prefect Secret block {block_name!r}"
    try:
        # _sync: the sync implementation even if called from an async context.
        block = cast(Secret[Any], Secret.load(block_name, _sync=True))  # type: ignore[call-arg]
        value = block.get()
    except ValueError:
        raise SettingsError(source, ["not found; create it or fix the block name"]) from None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if not isinstance(value, dict):
        raise SettingsError(source, ["does not hold a service-account JSON object"])
    return value


def _credentials_from_file(path: str) -> Credentials:
    source = f"Google credentials file {path}"
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(source, [f"cannot be read ({exc.strerror or exc})"]) from None
    except ValueError:
        raise SettingsError(source, ["is not JSON"]) from None
    if not isinstance(info, dict):
        raise SettingsError(source, ["is not a service-account JSON object"])
    return service_account_credentials(info, source)


def build_calendar_service(
    endpoint: str | None,
    credentials_file: str | None = None,
    token: str | None = None,
    *,
    secret_block: str | None = None,
    service_account_info: dict[str, Any] | None = None,
    credentials: Credentials | None = None,
    timeout: float = 15.0,
    subject: str | None = None,
) -> Any:
    """The one place a Calendar client is built.

    ``endpoint``: None for Google itself, else a base URL (``/calendar/v3/`` is added when
    missing). Credentials, first found: ``credentials``, ``service_account_info`` (the parsed
    service-account JSON, e.g. from ``load_service_account_info``), ``credentials_file`` (that
    JSON in a file), ``secret_block`` (a Prefect Secret holding it), ``token`` (an OAuth bearer
    token); with none, anonymous (the stand-in), which Google itself refuses.
    ``subject``: the user a service account acts for (domain-wide delegation), which Google
    requires before a service account may invite attendees.
    """
    if credentials is None:
        if service_account_info is not None:
            credentials = service_account_credentials(
                service_account_info, "Google service-account info"
            )
        elif credentials_file:
            credentials = _credentials_from_file(credentials_file)
        elif secret_block:
            credentials = service_account_credentials(
                load_service_account_info(secret_block), f"Prefect Secret block {secret_block!r}"
            )
        elif token:
            credentials = oauth2_credentials.Credentials(token=token)
        elif endpoint is None:
            raise SettingsError(
                "Google Calendar settings",
                ["Google needs credentials: set a service-account file or Secret block"],
            )
        else:
            credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
    if subject and isinstance(credentials, service_account.Credentials):
        credentials = credentials.with_subject(subject)
    options: dict[str, Any] = {}
    if endpoint is not None:
        options["api_endpoint"] = api_endpoint(endpoint)
    # The client refuses credentials of another universe than its own; keep them equal.
    options["universe_domain"] = getattr(credentials, "universe_domain", None) or "googleapis.com"
    # No refresh-and-retry on 401: anonymous and bare-token credentials cannot refresh (the
    # 401 would surface as a confusing auth error), and a service account's self-signed JWT
    # is re-signed before it expires anyway. A 401 is reported with Google's message.
    http = google_auth_httplib2.AuthorizedHttp(
        credentials, http=httplib2.Http(timeout=timeout), refresh_status_codes=()
    )
    return build(
        "calendar",
        "v3",
        http=http,
        static_discovery=True,
        cache_discovery=False,
        client_options=options,
    )


def build_calendar(settings: Settings) -> LaunchCalendar:
    """The launch calendar the settings describe (the stand-in on the embedded default).

    With none configured at all, one that skips every entry; with one configured wrongly
    (an unreadable key file, say), one whose runs fail saying what to fix. Either way the rest
    of a launch still goes ahead.
    """
    endpoint = settings.gcal_api_endpoint
    file = settings.gcal_credentials_file
    if endpoint is None and file is None and settings.gcal_secret_block is None:
        return NoCalendar()
    try:
        service = build_calendar_service(
            endpoint,
            str(file) if file else None,
            secret_block=settings.gcal_secret_block,
            subject=settings.gcal_subject,
        )
    except SettingsError as exc:
        return UnconfiguredCalendar("; ".join(exc.problems) + f" ({exc.source})")
    return CalendarAdapter(service, retry=retry_policy(settings))
