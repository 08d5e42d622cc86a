"""The launch calendar adapter against the Calendar stand-in: the real google-api-python-client
over real HTTP on 127.0.0.1, with the stand-in's request log and fault injection."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import googleapiclient
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from googleapiclient.errors import HttpError
from starlette.applications import Starlette

from tests.conftest import ROOT, TODAY
from tminus.domain.calendar import (
    CalendarEvent,
    InsertEvent,
    LaunchCalendar,
    UpdateEvent,
    diff_calendar,
    event_id,
)
from tminus.domain.plan import CalendarSpec, Plan
from tminus.domain.planner import plan_launch
from tminus.domain.playbook import Playbook
from tminus.domain.request import LaunchRequest, Tier
from tminus.domain.results import ActionResult, Outcome, is_noop
from tminus.errors import PermanentError, SettingsError, TminusError, TransientError
from tminus.integrations.gcal import (
    KEY_PROP,
    LAUNCH_PROP,
    CalendarAdapter,
    NoCalendar,
    UnconfiguredCalendar,
    api_endpoint,
    build_calendar,
    build_calendar_service,
    calendar_page_url,
    insert_body,
    load_service_account_info,
    patch_body,
    translate,
)
from tminus.integrations.retry import RetryPolicy
from tminus.settings import load_settings
from tminus.tasks.apply import failed
from tminus_sandbox.app import ThreadedServer, free_port
from tminus_sandbox.control import Control, ControlMiddleware, Faults
from tminus_sandbox.gcal import API_METHODS, GLOBAL_PARAMS, GCalStore, gcal_routes

CAL = "marketing-launches@group.calendar.google.com"
WRITES = ("POST", "PUT", "PATCH", "DELETE")
FIXTURES = ROOT / "tests" / "fixtures" / "google"  # real Calendar error bodies
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def no_sleep(seconds: float) -> None:
    return None


def fast(attempts: int = 8) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, sleep=no_sleep)


@dataclass
class StandIn:
    url: str
    store: GCalStore
    control: Control
    services: list[Any] = field(default_factory=list)

    def service(self, **kwargs: Any) -> Any:
        service = build_calendar_service(self.url, **kwargs)
        self.services.append(service)
        return service

    def close(self) -> None:
        """Close every client a test built (their kept-alive connections)."""
        while self.services:
            self.services.pop().close()

    def adapter(self, attempts: int = 8, **kwargs: Any) -> CalendarAdapter:
        return CalendarAdapter(self.service(), retry=fast(attempts), **kwargs)

    def log(self) -> list[Any]:
        """The request log, once settled: the middleware records a request just after its
        answer is sent, so the last entry may lag the client by a moment."""
        seen = -1
        while len(self.control.log) != seen:
            seen = len(self.control.log)
            time.sleep(0.02)
        return list(self.control.log)

    def clear_log(self) -> None:
        self.log()
        self.control.clear()

    def writes(self) -> list[Any]:
        return [r for r in self.log() if r.method in WRITES]

    def events(self) -> list[dict[str, Any]]:
        return self.store.events(CAL)


@pytest.fixture(scope="module")
def stand_in_server() -> Iterator[StandIn]:
    store = GCalStore(":memory:")
    control = Control()
    app = ControlMiddleware(Starlette(routes=gcal_routes(store)), control)
    with ThreadedServer(app) as server:
        yield StandIn(server.url, store, control)


@pytest.fixture
def gcal(stand_in_server: StandIn) -> Iterator[StandIn]:
    """The module's stand-in, emptied: no events, no log, no faults, no auth required."""
    stand_in_server.store.reset()
    stand_in_server.store.require_auth = False
    stand_in_server.control.set_faults(Faults())
    stand_in_server.clear_log()
    yield stand_in_server
    stand_in_server.close()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if anything resolves or connects beyond 127.0.0.1 (google-auth can try)."""
    attempts: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in LOOPBACK:
            attempts.append(str(host))
            raise socket.gaierror(f"test: {host} is not loopback")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and address[0] not in LOOPBACK:
            attempts.append(str(address))
            raise OSError(f"test: {address} is not loopback")
        real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    yield
    assert not attempts, f"network traffic beyond loopback attempted: {attempts}"


def plan_for(request: LaunchRequest, playbook: Playbook, **changes: Any) -> Plan:
    return plan_launch(request.model_copy(update=changes), playbook, TODAY)


def reconcile(
    calendar: LaunchCalendar, plan: Plan, dry_run: bool = False
) -> dict[str, ActionResult]:
    """What ``tasks.calendar.reconcile_calendar`` does, without Prefect: observe (its errors
    are raised), diff, apply each change that does something (a failed write fails its row)."""
    slug = plan.request.slug
    observed = calendar.observe(CAL, slug)
    rows = []
    for change in diff_calendar(plan.calendar, observed, slug, skip_reason=calendar.skip_reason):
        row = change.planned()
        if not dry_run and not is_noop(row):
            try:
                row = calendar.apply(CAL, change)
            except TminusError as exc:
                row = failed(row, exc)
        rows.append(row)
    return {r.key: r for r in rows}


def fixture_body(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


# --- reconcile --------------------------------------------------------------------------


def test_first_run_creates_one_all_day_event_per_spec(
    gcal: StandIn, l1: LaunchRequest, playbook: Playbook
) -> None:
    plan = plan_for(l1, playbook)
    assert len(plan.calendar) == 3  # launch day, sales training, livestream
    results = reconcile(gcal.adapter(), plan)
    assert {r.outcome for r in results.values()} == {Outcome.created}
    assert all(r.kind == "calendar" for r in results.values())
    events = {e["id"]: e for e in gcal.events()}
    assert len(events) == len(plan.calendar)
    for spec in plan.calendar:
        event = events[event_id(spec.key)]
        assert event["start"] == {"date": spec.day.isoformat()}
        assert event["end"] == {"date": (spec.day + timedelta(days=1)).isoformat()}
        assert event["summary"] == spec.title
        assert event["description"] == spec.description
        assert event["transparency"] == "transparent"
        assert event["status"] == "confirmed"
        assert event["extendedProperties"]["private"] == {
            LAUNCH_PROP: plan.request.slug,
            KEY_PROP: spec.key,
            "tminus_activity": spec.activity_key,
        }
        assert results[spec.key].url == event["htmlLink"]
    launch_day = next(s for s in plan.calendar if s.key.endswith("/launch-day"))
    assert launch_day.day == l1.launch_date
    # The link opens the stand-in's page of the event; the calendar page lists it by date.
    page = httpx.get(results[launch_day.key].url or "")
    assert page.status_code == 200 and launch_day.title in page.text
    whole = httpx.get(calendar_page_url(gcal.url, CAL))
    assert whole.status_code == 200 and "2027-03-16 (all day)" in whole.text


def test_unchanged_rerun_sends_no_write(
    gcal: StandIn, l1: LaunchRequest, playbook: Playbook
) -> None:
    plan = plan_for(l1, playbook)
    adapter = gcal.adapter()
    reconcile(adapter, plan)
    gcal.clear_log()
    results = reconcile(adapter, plan)
    assert {r.outcome for r in results.values()} == {Outcome.unchanged}
    assert gcal.writes() == []
    reads = list(gcal.log())
    assert len(reads) == 1 and reads[0].method == "GET"  # one list, checked against Calendar
    assert "privateExtendedProperty=tminus_launch%3Dcode-review-agent" in reads[0].query
    assert "showDeleted=true" in reads[0].query


def test_moving_the_launch_moves_every_event(
    gcal: StandIn, l1: LaunchRequest, playbook: Playbook
) -> None:
    adapter = gcal.adapter()
    reconcile(adapter, plan_for(l1, playbook))
    moved = plan_for(l1, playbook, launch_date=l1.launch_date + timedelta(days=7))
    gcal.clear_log()
    results = reconcile(adapter, moved)
    assert {r.outcome for r in results.values()} == {Outcome.updated}
    assert all("date" in r.detail for r in results.values())
    assert {w.method for w in gcal.writes()} == {"PATCH"}  # moved, never re-created
    events = {e["id"]: e for e in gcal.events()}
    assert len(events) == len(moved.calendar)
    for spec in moved.calendar:
        assert events[event_id(spec.key)]["start"] == {"date": spec.day.isoformat()}
        assert events[event_id(spec.key)]["end"] == {
            "date": (spec.day + timedelta(days=1)).isoformat()
        }


def test_dropping_the_tier_cancels_and_raising_it_revives(
    gcal: StandIn, l1: LaunchRequest, playbook: Playbook
) -> None:
    adapter = gcal.adapter()
    big = plan_for(l1, playbook)
    reconcile(adapter, big)
    small = plan_for(l1, playbook, tier=Tier.L3)
    dropped = {s.key for s in big.calendar} - {s.key for s in small.calendar}
    assert dropped  # sales training and the livestream are not L3 activities

    gcal.clear_log()
    results = reconcile(adapter, small)
    assert {w.method for w in gcal.writes()} == {"PATCH"}  # cancelled by a patch, not deleted
    for key in dropped:
        assert results[key].outcome is Outcome.closed
    launch_day = next(s.key for s in small.calendar)
    assert results[launch_day].outcome is Outcome.updated  # its title names the tier
    by_id = {e["id"]: e for e in gcal.events()}
    assert len(by_id) == len(big.calendar)  # cancelled, not deleted
    for key in dropped:
        assert by_id[event_id(key)]["status"] == "cancelled"
    # Cancelled events are hidden from a normal listing, as in Google.
    listed = gcal.service().events().list(calendarId=CAL).execute()
    assert [e["id"] for e in listed["items"]] == [event_id(launch_day)]

    gcal.clear_log()
    again = reconcile(adapter, small)
    assert {r.outcome for r in again.values()} == {Outcome.unchanged}
    assert gcal.writes() == []

    results = reconcile(adapter, big)
    for key in dropped:
        assert results[key].outcome is Outcome.updated
        assert results[key].detail.startswith("changed: revived")
    assert all(e["status"] == "confirmed" for e in gcal.events())
    assert not [w for w in gcal.writes() if w.method == "POST"]


def test_dry_run_reads_only(gcal: StandIn, l1: LaunchRequest, playbook: Playbook) -> None:
    adapter = gcal.adapter()
    plan = plan_for(l1, playbook)
    results = reconcile(adapter, plan, dry_run=True)
    assert {r.outcome for r in results.values()} == {Outcome.created}
    assert gcal.writes() == [] and gcal.events() == []
    reconcile(adapter, plan)
    gcal.clear_log()
    moved = plan_for(l1, playbook, launch_date=l1.launch_date + timedelta(days=1), tier=Tier.L3)
    results = reconcile(adapter, moved, dry_run=True)
    assert {r.outcome for r in results.values()} == {Outcome.updated, Outcome.closed}
    assert gcal.writes() == []


def test_insert_answered_409_duplicate_adopts_the_event(
    gcal: StandIn, l1: LaunchRequest, playbook: Playbook
) -> None:
    plan = plan_for(l1, playbook)
    spec = plan.calendar[0]
    # Someone (or an older tool) made an event with our id but without our properties, so
    # the launch's list cannot find it: the insert answers 409 duplicate.
    stray = {**insert_body(InsertEvent(spec, plan.request.slug)), "summary": "old title"}
    stray.pop("extendedProperties")
    gcal.service().events().insert(calendarId=CAL, body=stray).execute()
    gcal.clear_log()

    results = reconcile(gcal.adapter(), plan)
    assert results[spec.key].outcome is Outcome.updated
    assert "title" in results[spec.key].detail and "properties" in results[spec.key].detail
    assert [(r.method, r.status) for r in gcal.log() if r.method == "POST"].count(
        ("POST", 409)
    ) == 1
    assert len(gcal.events()) == len(plan.calendar)
    adopted = gcal.store.event(CAL, event_id(spec.key))
    assert adopted["summary"] == spec.title
    assert adopted["extendedProperties"]["private"][KEY_PROP] == spec.key
    gcal.clear_log()
    assert {r.outcome for r in reconcile(gcal.adapter(), plan).values()} == {Outcome.unchanged}
    assert gcal.writes() == []


def test_lost_insert_answers_never_duplicate(
    gcal: StandIn, l1: LaunchRequest, playbook: Playbook
) -> None:
    """Every insert happens but its answer is lost (a 502 after the write): the client's own
    retry re-sends it and gets 409 duplicate, which the adapter takes as 'already there'."""
    plan = plan_for(l1, playbook)
    gcal.control.set_faults(Faults(after_write_error_rate=0.5, methods=["POST"], seed=3))
    results = reconcile(gcal.adapter(attempts=7), plan)
    assert Outcome.failed not in {r.outcome for r in results.values()}
    posts = [(r.status, r.fault) for r in gcal.log() if r.method == "POST"]
    assert (502, "after-write") in posts and (409, None) in posts
    assert sorted(e["id"] for e in gcal.events()) == sorted(event_id(s.key) for s in plan.calendar)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_transient_faults_still_converge(
    gcal: StandIn, l1: LaunchRequest, playbook: Playbook, seed: int
) -> None:
    adapter = gcal.adapter(attempts=9)
    faults = Faults(error_rate=0.2, rate_limit_rate=0.2, after_write_error_rate=0.2, seed=seed)
    gcal.control.set_faults(faults)
    plan = plan_for(l1, playbook)
    moved = plan_for(l1, playbook, launch_date=l1.launch_date + timedelta(days=7), tier=Tier.L2)
    for step in (plan, moved):
        results = reconcile(adapter, step)
        assert Outcome.failed not in {r.outcome for r in results.values()}
    assert any(r.fault for r in gcal.log())

    gcal.control.set_faults(Faults())
    gcal.clear_log()
    results = reconcile(adapter, moved)
    assert {r.outcome for r in results.values()} == {Outcome.unchanged}
    assert gcal.writes() == []
    events = {e["id"]: e for e in gcal.events()}
    assert len(events) == len(plan.calendar)  # no duplicates
    for spec in moved.calendar:
        assert events[event_id(spec.key)]["start"] == {"date": spec.day.isoformat()}
        assert events[event_id(spec.key)]["status"] == "confirmed"


@pytest.mark.parametrize(
    ("status", "reason"),
    [(403, "rateLimitExceeded"), (403, "userRateLimitExceeded"), (429, "rateLimitExceeded")],
)
def test_rate_limits_are_retried_by_the_client(
    gcal: StandIn, l1: LaunchRequest, playbook: Playbook, status: int, reason: str
) -> None:
    gcal.store.fail_next(2, status, reason)
    results = reconcile(gcal.adapter(attempts=4), plan_for(l1, playbook))
    assert {r.outcome for r in results.values()} == {Outcome.created}
    assert [r.status for r in gcal.log()[:3]] == [status, status, 200]


def test_rate_limit_beyond_retries_is_transient(
    gcal: StandIn, l1: LaunchRequest, playbook: Playbook
) -> None:
    gcal.store.fail_next(5, 403, "rateLimitExceeded")
    with pytest.raises(TransientError) as info:
        reconcile(gcal.adapter(attempts=3), plan_for(l1, playbook))
    err = info.value
    assert (err.system, err.status) == ("Google Calendar", 403)
    assert err.message == "Rate Limit Exceeded; gave up after 3 attempts in 0s"
    assert err.resource == f"events of calendar {CAL}"
    assert len(gcal.log()) == 3


def test_a_failed_write_fails_its_event_only(
    gcal: StandIn, l1: LaunchRequest, playbook: Playbook
) -> None:
    adapter = gcal.adapter(attempts=1)
    reconcile(adapter, plan_for(l1, playbook))
    moved = plan_for(l1, playbook, launch_date=l1.launch_date + timedelta(days=2))
    gcal.clear_log()
    gcal.control.set_faults(Faults(error_rate=1.0, error_status=503, methods=["PATCH"]))
    results = reconcile(adapter, moved)
    assert {r.outcome for r in results.values()} == {Outcome.failed}
    assert len([r for r in gcal.log() if r.method == "PATCH"]) == len(results)
    for key, result in results.items():
        assert result.detail == (
            f"Google Calendar event {key} in calendar {CAL} (503): 503 injected by the sandbox"
        )


def test_paging_follows_next_page_token(
    gcal: StandIn, l1: LaunchRequest, playbook: Playbook
) -> None:
    adapter = gcal.adapter(page_size=2)
    plan = plan_for(l1, playbook)
    reconcile(adapter, plan)
    gcal.clear_log()
    results = reconcile(adapter, plan)
    assert {r.outcome for r in results.values()} == {Outcome.unchanged}
    assert [r.method for r in gcal.log()] == ["GET", "GET"]  # two pages, no insert try
    assert "pageToken=" in gcal.log()[1].query


def test_text_calendar_trimmed_is_equal_and_a_time_someone_set_is_cleared(gcal: StandIn) -> None:
    spec = CalendarSpec(
        key="x/calendar/launch-day",
        activity_key="launch-day",
        title="Launch day",
        description="It ships.\n",
        day=date(2027, 3, 16),
    )
    body = {**insert_body(InsertEvent(spec, "x")), "description": "It ships."}  # Calendar may trim
    events = gcal.service().events()
    events.insert(calendarId=CAL, body=body).execute()
    adapter = gcal.adapter()
    (change,) = diff_calendar([spec], adapter.observe(CAL, "x"), "x")
    assert is_noop(change.planned())

    timed = {
        "start": {"date": None, "dateTime": "2027-03-16T09:00:00Z", "timeZone": "UTC"},
        "end": {"date": None, "dateTime": "2027-03-16T10:00:00Z", "timeZone": "UTC"},
    }
    events.patch(calendarId=CAL, eventId=event_id(spec.key), body=timed).execute()
    (change,) = diff_calendar([spec], adapter.observe(CAL, "x"), "x")
    assert isinstance(change, UpdateEvent)
    assert patch_body(change) == {
        "start": {"date": "2027-03-16", "dateTime": None, "timeZone": None},
        "end": {"date": "2027-03-17", "dateTime": None, "timeZone": None},
    }
    assert change.planned().detail == "changed: date 2027-03-16T09:00:00Z -> 2027-03-16"
    gcal.clear_log()
    assert adapter.apply(CAL, change).outcome is Outcome.updated
    assert [w.method for w in gcal.writes()] == ["PATCH"]
    stored = gcal.store.event(CAL, event_id(spec.key))
    assert stored["start"] == {"date": "2027-03-16"} and stored["end"] == {"date": "2027-03-17"}


def test_patch_body_writes_only_what_drifted() -> None:
    spec = CalendarSpec(
        key="x/calendar/launch-day",
        activity_key="launch-day",
        title="Launch day",
        description="",
        day=date(2027, 3, 16),
    )
    ours = CalendarEvent(
        key=spec.key,
        event_id=event_id(spec.key),
        title="Launch day",
        start=date(2027, 3, 16),
        end=date(2027, 3, 17),
        launch_slug="x",
        activity_key="launch-day",
    )
    timed_start = replace(ours, start=None, start_time="2027-03-16T09:00:00Z")
    (change,) = diff_calendar([spec], [timed_start], "x")
    assert isinstance(change, UpdateEvent)
    assert patch_body(change) == {
        "start": {"date": "2027-03-16", "dateTime": None, "timeZone": None}
    }
    moved = replace(
        ours, title="Old", start=date(2027, 3, 9), end=date(2027, 3, 10), cancelled=True
    )
    (change,) = diff_calendar([spec], [moved], "x")
    assert isinstance(change, UpdateEvent)
    assert patch_body(change) == {
        "summary": "Launch day",
        "start": {"date": "2027-03-16"},
        "end": {"date": "2027-03-17"},
        "status": "confirmed",
    }
    untagged = replace(ours, activity_key=None)
    (change,) = diff_calendar([spec], [untagged], "x")
    assert isinstance(change, UpdateEvent)
    assert patch_body(change) == {
        "extendedProperties": {
            "private": {LAUNCH_PROP: "x", KEY_PROP: spec.key, "tminus_activity": "launch-day"}
        }
    }


# --- error translation ------------------------------------------------------------------


def test_404_is_permanent_with_googles_message(gcal: StandIn) -> None:
    service = gcal.service()
    with pytest.raises(PermanentError) as info, translate("event nothing"):
        service.events().get(calendarId=CAL, eventId="nosuchevent").execute()
    err = info.value
    assert (err.system, err.status, err.resource) == ("Google Calendar", 404, "event nothing")
    assert err.message.startswith("Not Found (")  # Google's text, then what to check
    assert str(err).startswith("Google Calendar event nothing (404): Not Found")
    assert isinstance(err.__cause__, HttpError)


@pytest.mark.parametrize(
    ("status", "reason", "cls"),
    [
        (403, "requiredAccessLevel", PermanentError),
        (403, "rateLimitExceeded", TransientError),
        (409, "duplicate", PermanentError),
        (500, "backendError", TransientError),
        (400, "invalid", PermanentError),
    ],
)
def test_error_classes(gcal: StandIn, status: int, reason: str, cls: type[Exception]) -> None:
    gcal.store.fail_next(1, status, reason)
    with pytest.raises(cls) as info, translate("events"):
        gcal.service().events().list(calendarId=CAL).execute()
    assert info.value.status == status  # type: ignore[attr-defined]


def test_bad_event_id_is_refused_by_the_stand_in(gcal: StandIn) -> None:
    body = {"id": "Not-Valid", "start": {"date": "2027-01-01"}, "end": {"date": "2027-01-02"}}
    with pytest.raises(PermanentError) as info, translate("insert"):
        gcal.service().events().insert(calendarId=CAL, body=body).execute()
    assert (info.value.status, info.value.message) == (400, "Invalid resource id value.")


def test_proxy_errors_after_retries_are_transient(gcal: StandIn) -> None:
    gcal.control.set_faults(Faults(error_rate=1.0))
    with pytest.raises(TransientError) as info:
        gcal.adapter(attempts=2).observe(CAL, "x")
    assert info.value.status == 502
    assert info.value.message.startswith("502 injected by the sandbox; gave up after 2 attempts")


def test_connection_refused_is_transient() -> None:
    service = build_calendar_service(f"http://127.0.0.1:{free_port()}")
    adapter = CalendarAdapter(service, retry=fast(2))
    with pytest.raises(TransientError) as info:
        adapter.observe(CAL, "x")
    assert info.value.message.startswith("cannot reach Google Calendar (ConnectionRefusedError)")


def test_timeout_is_transient(gcal: StandIn) -> None:
    gcal.control.set_faults(Faults(latency_ms=400))
    adapter = CalendarAdapter(gcal.service(timeout=0.1), retry=fast(1))
    with pytest.raises(TransientError) as info:
        adapter.observe(CAL, "x")
    assert "TimeoutError" in info.value.message
    # Let the slow request finish, so it does not land in the next test's log.
    deadline = time.monotonic() + 5
    while not gcal.control.log and time.monotonic() < deadline:
        time.sleep(0.02)


# --- credentials ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service_account_info() -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": "tminus-test",
        "private_key_id": "test-key",
        "private_key": pem,
        "client_email": "launches@tminus-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
        # Another universe than Google's: google-auth then skips its background "regional
        # access boundary" lookup, which would otherwise call iamcredentials.googleapis.com.
        "universe_domain": "tminus.test",
    }


def test_service_account_file_sends_a_self_signed_jwt(
    gcal: StandIn,
    l1: LaunchRequest,
    playbook: Playbook,
    service_account_info: dict[str, str],
    tmp_path: Path,
) -> None:
    gcal.store.require_auth = True
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(service_account_info))
    adapter = CalendarAdapter(gcal.service(credentials_file=str(key_file)), retry=fast())
    results = reconcile(adapter, plan_for(l1, playbook))
    assert {r.outcome for r in results.values()} == {Outcome.created}


def test_bearer_token_and_anonymous(gcal: StandIn) -> None:
    gcal.store.require_auth = True
    CalendarAdapter(gcal.service(token="ya29.test"), retry=fast()).observe(CAL, "x")
    with pytest.raises(PermanentError) as info:
        gcal.adapter().observe(CAL, "x")
    assert info.value.status == 401
    assert info.value.message.startswith("Login Required. (check the service-account")


def test_a_broken_key_file_never_shows_the_key(
    service_account_info: dict[str, str], tmp_path: Path
) -> None:
    secret = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC-not-a-key"
    broken = {
        **service_account_info,
        "private_key": f"-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n",
    }
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(broken))
    with pytest.raises(SettingsError) as info:
        build_calendar_service("http://127.0.0.1:1", str(key_file))
    assert secret not in str(info.value)
    assert info.value.__suppress_context__  # the library's own text is not chained
    with pytest.raises(SettingsError, match="cannot be read"):
        build_calendar_service("http://127.0.0.1:1", str(tmp_path / "missing.json"))
    with pytest.raises(SettingsError, match="needs credentials"):
        build_calendar_service(None)


def test_build_calendar_from_settings(gcal: StandIn) -> None:
    settings = load_settings({"TMINUS_GCAL_ENDPOINT": api_endpoint(gcal.url)})
    calendar = build_calendar(settings)
    assert isinstance(calendar, CalendarAdapter)
    assert calendar.observe(CAL, "x") == []
    calendar.close()
    # A real GitLab and no calendar configured: entries are skipped, saying what to set.
    none = build_calendar(load_settings({"TMINUS_GITLAB_URL": "https://gl.example.com"}))
    spec = CalendarSpec(
        key="x/calendar/launch-day",
        activity_key="launch-day",
        title="T",
        description="",
        day=date(2030, 1, 1),
    )
    assert isinstance(none, NoCalendar)
    (change,) = diff_calendar([spec], none.observe(CAL, "x"), "x", skip_reason=none.skip_reason)
    row = change.planned()
    assert row.outcome is Outcome.skipped and "TMINUS_GCAL_CREDENTIALS_FILE" in row.detail
    # Configured wrongly: the calendar step fails, saying what to fix.
    broken = build_calendar(
        load_settings(
            {
                "TMINUS_GITLAB_URL": "https://gl.example.com",
                "TMINUS_GCAL_CREDENTIALS_FILE": "/nonexistent/key.json",
            }
        )
    )
    assert isinstance(broken, UnconfiguredCalendar)
    with pytest.raises(SettingsError):
        broken.observe(CAL, "x")


@pytest.mark.e2e
def test_service_account_from_a_prefect_secret_block(
    prefect_server: str,
    gcal: StandIn,
    service_account_info: dict[str, str],
) -> None:
    from prefect.blocks.system import Secret

    Secret(value=service_account_info).save("tminus-test-gcal-dict", overwrite=True)  # type: ignore[arg-type]
    Secret(value=json.dumps(service_account_info)).save("tminus-test-gcal-text", overwrite=True)  # type: ignore[arg-type]
    Secret(value="not json").save("tminus-test-gcal-junk", overwrite=True)  # type: ignore[arg-type]
    assert load_service_account_info("tminus-test-gcal-dict") == service_account_info
    assert load_service_account_info("tminus-test-gcal-text") == service_account_info
    with pytest.raises(SettingsError, match="does not hold") as info:
        load_service_account_info("tminus-test-gcal-junk")
    assert "not json" not in str(info.value)
    with pytest.raises(SettingsError, match="not found"):
        load_service_account_info("tminus-test-gcal-nowhere")
    gcal.store.require_auth = True
    service = gcal.service(secret_block="tminus-test-gcal-dict")
    assert CalendarAdapter(service, retry=fast()).observe(CAL, "x") == []
    info = load_service_account_info("tminus-test-gcal-text")
    service = gcal.service(service_account_info=info)
    assert CalendarAdapter(service, retry=fast()).observe(CAL, "x") == []


# --- the stand-in itself ----------------------------------------------------------------


def test_routes_match_the_discovery_document() -> None:
    doc_path = Path(googleapiclient.__file__).parent / "discovery_cache/documents/calendar.v3.json"
    doc = json.loads(doc_path.read_text())
    assert doc["servicePath"] == "calendar/v3/"
    methods = doc["resources"]["events"]["methods"]
    served = {
        (verb, route.path.removeprefix("/calendar/v3/"))
        for route in gcal_routes(GCalStore(":memory:"))
        if route.path.startswith("/calendar/v3/")
        for verb in (route.methods or set()) - {"HEAD"}
    }
    assert served == {(m.http_method, m.path) for m in API_METHODS}
    for m in API_METHODS:
        spec = methods[m.name]
        assert (spec["httpMethod"], spec["path"]) == (m.http_method, m.path)
        for param in m.params:
            assert spec["parameters"][param]["location"] == "query", (m.name, param)
    assert set(GLOBAL_PARAMS) <= set(doc["parameters"])


def _raw(gcal: StandIn) -> httpx.Client:
    return httpx.Client(base_url=f"{gcal.url}/calendar/v3/calendars/{CAL}", timeout=5)


def _event(event_id_: str, day: str, **extra: Any) -> dict[str, Any]:
    end = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    return {"id": event_id_, "start": {"date": day}, "end": {"date": end}, **extra}


def test_error_bodies_are_googles(gcal: StandIn) -> None:
    with _raw(gcal) as http:
        assert http.post("/events", json=_event("abcde1", "2027-01-01")).status_code == 200
        dup = http.post("/events", json=_event("abcde1", "2027-01-01"))
        assert dup.status_code == 409
        assert dup.json() == fixture_body("gcal_error_409_duplicate.json")
        missing = http.get("/events/nothing1")
        assert missing.status_code == 404
        assert missing.json() == fixture_body("gcal_error_404_notFound.json")
        empty = http.get(
            "/events", params={"timeMin": "2027-02-01T00:00:00Z", "timeMax": "2027-01-01T00:00:00Z"}
        )
        assert empty.status_code == 400
        assert empty.json() == fixture_body("gcal_error_400_timeRangeEmpty.json")
        for status, reason in [
            (403, "rateLimitExceeded"),
            (403, "userRateLimitExceeded"),
            (429, "rateLimitExceeded"),
        ]:
            gcal.store.fail_next(1, status, reason)
            answer = http.get("/events")
            assert answer.status_code == status
            assert answer.json() == fixture_body(f"gcal_error_{status}_{reason}.json")


def test_insert_validation(gcal: StandIn) -> None:
    with _raw(gcal) as http:
        backwards = _event("abcde2", "2027-01-02", end={"date": "2027-01-01"})
        answer = http.post("/events", json=backwards)
        assert answer.status_code == 400
        assert answer.json()["error"]["errors"][0]["reason"] == "timeRangeEmpty"
        answer = http.post("/events", json={"id": "abcde3", "start": {"date": "2027-01-01"}})
        assert (answer.status_code, answer.json()["error"]["message"]) == (400, "Missing end time.")
        for bad in ("abcd", "abcdw1", "ABCDE1", "a" * 1025):
            answer = http.post("/events", json=_event(bad, "2027-01-01"))
            assert answer.json()["error"]["errors"][0]["reason"] == "invalid", bad
        generated = http.post(
            "/events", json={k: v for k, v in _event("x", "2027-01-01").items() if k != "id"}
        )
        assert generated.status_code == 200 and len(generated.json()["id"]) >= 5


def test_list_filters_and_pages(gcal: StandIn) -> None:
    service = gcal.service()
    events = service.events()
    for n, day in enumerate(["2027-01-01", "2027-01-05", "2027-01-09", "2027-01-13"]):
        props = {"private": {"launch": "a" if n < 3 else "b", "n": str(n)}}
        events.insert(
            calendarId=CAL, body=_event(f"event{n}a", day, extendedProperties=props)
        ).execute()
    events.delete(calendarId=CAL, eventId="event2a").execute()

    def ids(**params: Any) -> list[str]:
        return [e["id"] for e in events.list(calendarId=CAL, **params).execute()["items"]]

    assert ids() == ["event0a", "event1a", "event3a"]
    assert ids(showDeleted=True) == ["event0a", "event1a", "event2a", "event3a"]
    assert ids(privateExtendedProperty="launch=a") == ["event0a", "event1a"]
    assert ids(privateExtendedProperty=["launch=a", "n=1"]) == ["event1a"]  # all must match
    assert ids(privateExtendedProperty="launch=c") == []
    # timeMin bounds the end (exclusive), timeMax the start (exclusive).
    assert ids(timeMin="2027-01-02T00:00:00Z", timeMax="2027-01-13T00:00:00Z") == ["event1a"]
    first = events.list(calendarId=CAL, maxResults=2, showDeleted=True).execute()
    assert [e["id"] for e in first["items"]] == ["event0a", "event1a"]
    rest = events.list(
        calendarId=CAL, maxResults=2, showDeleted=True, pageToken=first["nextPageToken"]
    ).execute()
    assert [e["id"] for e in rest["items"]] == ["event2a", "event3a"]
    assert "nextPageToken" not in rest


def test_patch_update_delete(gcal: StandIn) -> None:
    events = gcal.service().events()
    props = {"private": {"a": "1", "b": "2"}}
    made = events.insert(
        calendarId=CAL,
        body=_event(
            "patchme1", "2027-01-01", summary="S", description="D", extendedProperties=props
        ),
    ).execute()
    assert (made["kind"], made["status"], made["iCalUID"]) == (
        "calendar#event",
        "confirmed",
        "patchme1@google.com",
    )
    patched = events.patch(
        calendarId=CAL,
        eventId="patchme1",
        body={"description": "D2", "extendedProperties": {"private": {"b": "3"}}},
    ).execute()
    assert (patched["summary"], patched["description"]) == ("S", "D2")
    assert patched["extendedProperties"]["private"] == {"a": "1", "b": "3"}  # merged
    assert patched["etag"] != made["etag"] and patched["sequence"] == 1
    assert patched["created"] == made["created"]
    replaced = events.update(
        calendarId=CAL, eventId="patchme1", body=_event("patchme1", "2027-02-01", summary="T")
    ).execute()
    assert "description" not in replaced and replaced["start"] == {"date": "2027-02-01"}
    with pytest.raises(PermanentError) as info, translate("patch"):
        events.patch(
            calendarId=CAL, eventId="patchme1", body={"end": {"date": "2027-01-01"}}
        ).execute()
    assert info.value.status == 400
    events.delete(calendarId=CAL, eventId="patchme1").execute()
    assert events.get(calendarId=CAL, eventId="patchme1").execute()["status"] == "cancelled"
    with pytest.raises(PermanentError) as info, translate("delete"):
        events.delete(calendarId=CAL, eventId="patchme1").execute()
    assert info.value.status == 410
    revived = events.patch(
        calendarId=CAL, eventId="patchme1", body={"status": "confirmed"}
    ).execute()
    assert revived["status"] == "confirmed"


def test_pages_escape_text(gcal: StandIn) -> None:
    events = gcal.service().events()
    made = events.insert(
        calendarId=CAL,
        body=_event(
            "htmlpage1",
            "2027-01-01",
            summary="<script>alert(1)</script> & co",
            description="<b>bold</b>",
        ),
    ).execute()
    page = httpx.get(made["htmlLink"])
    assert page.status_code == 200
    assert (
        "<script>alert" not in page.text
        and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page.text
    )
    assert "&lt;b&gt;bold&lt;/b&gt;" in page.text
    listing = httpx.get(calendar_page_url(gcal.url, CAL))
    assert "<script>alert" not in listing.text and "&lt;script&gt;" in listing.text
    index = httpx.get(f"{gcal.url}/calendar/")
    assert CAL in index.text
    assert httpx.get(f"{gcal.url}/calendar/event", params={"eid": "garbage"}).status_code == 404


def test_calendar_fault_switch_over_http(gcal: StandIn) -> None:
    with httpx.Client(base_url=gcal.url) as http:
        answer = http.put("/_sandbox/calendar/faults", json={"count": 1, "status": 429})
        assert answer.json() == {"pending": [{"status": 429, "reason": "rateLimitExceeded"}]}
        assert http.get(f"/calendar/v3/calendars/{CAL}/events").status_code == 429
        assert http.get("/_sandbox/calendar/faults").json() == {"pending": []}


def test_the_sales_channel_address_is_bounded_as_an_email() -> None:
    address = "sales-channel@example.slack.com"
    assert load_settings({"TMINUS_SALES_CHANNEL_EMAIL": address}).sales_channel_email == address
    assert load_settings({}).sales_channel_email is None
    for bad in ("sales", "a b@example.com", "<x>@example.com", "x@-example.com", "a@" + "b" * 260):
        with pytest.raises(SettingsError, match="TMINUS_SALES_CHANNEL_EMAIL"):
            load_settings({"TMINUS_SALES_CHANNEL_EMAIL": bad})
