"""The GitLab webhook receiver over real HTTP.

The receiver runs under uvicorn (in a thread, or in a subprocess that gets SIGKILLed); a small
Starlette app stands in for Prefect's events API, validating what it receives with Prefect's own
``Event`` schema; one ``e2e`` test posts to a real Prefect server and reads the event back.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tminus.deployments.outbox import Outbox
from tminus.deployments.webhook import (
    BURST_HOLD_SECONDS,
    EVENT_ID_NAMESPACE,
    HOOK_PATH,
    ReleaseHook,
    WebhookConfig,
    create_app,
    json_depth,
    server_config,
)
from tminus_sandbox.app import ThreadedServer, free_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-hook-token"

# GitLab's documented Release Hook example (fixtures/gitlab/gitlab_release_create.json).
RELEASE: dict[str, Any] = {
    "id": 1,
    "created_at": "2020-11-02 12:55:12 UTC",
    "description": "v1.1 has been released",
    "name": "v1.1",
    "released_at": "2020-11-02 12:55:12 UTC",
    "tag": "v1.1",
    "object_kind": "release",
    "project": {
        "id": 2,
        "name": "release-webhook-example",
        "description": "",
        "web_url": "https://example.com/gitlab-org/release-webhook-example",
        "avatar_url": None,
        "git_ssh_url": "ssh://git@example.com/gitlab-org/release-webhook-example.git",
        "git_http_url": "https://example.com/gitlab-org/release-webhook-example.git",
        "namespace": "Gitlab",
        "visibility_level": 0,
        "path_with_namespace": "gitlab-org/release-webhook-example",
        "default_branch": "master",
        "ci_config_path": None,
        "homepage": "https://example.com/gitlab-org/release-webhook-example",
        "url": "ssh://git@example.com/gitlab-org/release-webhook-example.git",
        "ssh_url": "ssh://git@example.com/gitlab-org/release-webhook-example.git",
        "http_url": "https://example.com/gitlab-org/release-webhook-example.git",
    },
    "url": "https://example.com/gitlab-org/release-webhook-example/-/releases/v1.1",
    "action": "create",
    "assets": {
        "count": 5,
        "links": [
            {
                "id": 1,
                "external": True,
                "link_type": "other",
                "name": "Changelog",
                "url": "https://example.net/changelog",
            }
        ],
        "sources": [
            {
                "format": "zip",
                "url": "https://example.com/gitlab-org/release-webhook-example/-/archive/v1.1/release-webhook-example-v1.1.zip",
            },
        ],
    },
    "commit": {
        "id": "ee0a3fb31ac16e11b9dbb596ad16d4af654d08f8",
        "message": "Release v1.1",
        "title": "Release v1.1",
        "timestamp": "2020-10-31T14:58:32+11:00",
        "url": "https://example.com/gitlab-org/release-webhook-example/-/commit/ee0a3fb31ac16e11b9dbb596ad16d4af654d08f8",
        "author": {"name": "Example User", "email": "user@example.com"},
    },
}

# fixtures/gitlab/gitlab_webhook_headers_release.json, with the token placeholder filled in.
HEADERS: dict[str, str] = {
    "Content-Type": "application/json",
    "User-Agent": "GitLab/18.2.0",
    "Idempotency-Key": "f5e5f430-f57b-4e6e-9fac-d9128cd7232f",
    "X-Gitlab-Event": "Release Hook",
    "X-Gitlab-Webhook-UUID": "02affd2d-2cba-4033-917d-ec22d5dc4b38",
    "X-Gitlab-Instance": "https://gitlab.example.com",
    "X-Gitlab-Event-UUID": "13792a34-cac6-4fda-95a8-c58e00a3954e",
    "X-Gitlab-Token": TOKEN,
}

TAG_PUSH: dict[str, Any] = {
    "object_kind": "tag_push",
    "event_name": "tag_push",
    "ref": "refs/tags/v1.0.0",
    "project_id": 1,
    "project": {"id": 1, "path_with_namespace": "jsmith/example"},
}


# --- a stand-in for Prefect's events API ---------------------------------------------------------


class PrefectEventsStandIn:
    """``POST /api/events`` and ``GET /api/health`` like Prefect's; ``up = False`` answers 503."""

    def __init__(self) -> None:
        from prefect.server.events.schemas.events import Event

        self.schema = TypeAdapter(list[Event])
        self.events: list[dict[str, Any]] = []
        self.posts = 0
        self.up = True
        self._lock = threading.Lock()

        async def events(request: Request) -> Response:
            self.posts += 1
            if not self.up:
                return JSONResponse({"detail": "unavailable"}, status_code=503)
            body = await request.json()
            try:
                self.schema.validate_python(body)
            except ValidationError as exc:
                return JSONResponse({"detail": str(exc)}, status_code=422)
            with self._lock:
                self.events.extend(body)
            return Response(status_code=204)

        async def health(request: Request) -> Response:
            if not self.up:
                return JSONResponse({"detail": "unavailable"}, status_code=503)
            return JSONResponse(True)

        self.app = Starlette(
            routes=[
                Route("/api/events", events, methods=["POST"]),
                Route("/api/health", health, methods=["GET"]),
            ]
        )

    def reset(self) -> None:
        with self._lock:
            self.events.clear()
        self.up = True
        self.posts = 0

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)


@pytest.fixture(scope="module")
def prefect_events_server() -> Iterator[tuple[PrefectEventsStandIn, str]]:
    stand_in = PrefectEventsStandIn()
    with ThreadedServer(stand_in.app) as server:
        yield stand_in, f"{server.url}/api"


@pytest.fixture
def prefect_events(
    prefect_events_server: tuple[PrefectEventsStandIn, str],
) -> tuple[PrefectEventsStandIn, str]:
    """The module's events stand-in, emptied and up."""
    stand_in, url = prefect_events_server
    stand_in.reset()
    return stand_in, url


# --- the receiver --------------------------------------------------------------------------------


class LifespanServer(ThreadedServer):
    """The receiver served in a thread as ``tminus webhook`` serves it (``server_config``:
    lifespan on, so the sender runs; the same timeouts and protocol)."""

    def __init__(self, config: WebhookConfig, port: int | None = None) -> None:
        app = create_app(config)
        super().__init__(app, port)
        self.server = uvicorn.Server(
            server_config(app, config, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)


def make_config(db_path: Path, api_url: str, **overrides: Any) -> WebhookConfig:
    values: dict[str, Any] = {
        "token": SecretStr(TOKEN),
        "prefect_api_url": api_url,
        "db_path": db_path,
        "send_interval": 0.05,
        "send_timeout": 2.0,
        "max_backoff": 0.2,
    }
    values.update(overrides)
    return WebhookConfig(**values)


class Receiver:
    def __init__(self, server: LifespanServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=10)

    def post(
        self,
        payload: Any = None,
        *,
        drop: tuple[str, ...] = (),
        **headers: str,
    ) -> httpx.Response:
        sent = {k: v for k, v in HEADERS.items() if k not in drop}
        sent.update({k.replace("_", "-"): v for k, v in headers.items()})
        body = RELEASE if payload is None else payload
        return self.http.post(HOOK_PATH, content=json.dumps(body).encode(), headers=sent)

    def health(self) -> dict[str, Any]:
        response = self.http.get("/healthz")
        assert response.status_code == 200
        data: dict[str, Any] = response.json()
        return data


@pytest.fixture
def receiver_factory(tmp_path: Path) -> Iterator[Callable[..., Receiver]]:
    """Start receivers on ``tmp_path/outbox.sqlite3`` (or a given db); stopped at the end."""
    started: list[Receiver] = []

    def start(api_url: str, **overrides: Any) -> Receiver:
        overrides.setdefault("db_path", tmp_path / "outbox.sqlite3")
        server = LifespanServer(make_config(api_url=api_url, **overrides))
        server.__enter__()
        started.append(Receiver(server))
        return started[-1]

    yield start
    for receiver in started:
        receiver.http.close()
        if receiver.server.thread.is_alive():
            receiver.server.__exit__()


def stop(receiver: Receiver) -> None:
    receiver.server.__exit__()


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def settle() -> None:
    """Give the sender several rounds to (wrongly) send more."""
    time.sleep(0.3)


# Prefect refuses flow-run parameters larger than this (server.api.max_parameter_size).
PREFECT_MAX_PARAMETER_BYTES = 512 * 1024


def run_parameters(event: dict[str, Any]) -> dict[str, Any]:
    """The on-release run's parameters, rendered from ``event`` as the deployment trigger
    renders them (Prefect's own hydration of ``release_trigger().parameters``) and checked as
    Prefect checks a new run: its size limit, then the deployment's parameter schema. Raises
    when Prefect would not start the run."""
    from prefect._internal.schemas.validators import validate_parameter_size
    from prefect.server.events.actions import RunDeployment
    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate
    from prefect.utilities.schema_tools.validation import validate

    from tminus.deployments.serve import release_trigger
    from tminus.flows.on_release import on_release

    template = copy.deepcopy(release_trigger().parameters) or {}
    RunDeployment._upgrade_v1_templates(template)
    received = ReceivedEvent.model_validate({**event, "received": datetime.now(UTC)})
    context = HydrationContext(
        raise_on_error=True,
        render_jinja=True,
        jinja_context={"event": received},
        render_workspace_variables=True,
    )
    rendered: dict[str, Any] = hydrate(template, context)
    validate_parameter_size(rendered, PREFECT_MAX_PARAMETER_BYTES)
    validate(rendered, parameter_schema(on_release).model_dump_for_openapi(), raise_on_error=True)
    return rendered


def raw_exchange(port: int, data: bytes, *, give_up: float = 5.0) -> tuple[bytes, float]:
    """Send ``data`` on a fresh connection and read until the server closes it: the answer
    and how long that took. A server that holds the connection fails the test."""
    with socket.create_connection(("127.0.0.1", port), timeout=give_up) as sock:
        started = time.monotonic()
        sock.sendall(data)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"the receiver held the connection for {give_up} s") from None
            if not chunk:
                return b"".join(chunks), time.monotonic() - started
            chunks.append(chunk)


def status_and_json(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    data: dict[str, Any] = json.loads(body)
    return status, data


# --- tests ---------------------------------------------------------------------------------------


def test_release_delivery_becomes_one_event(
    prefect_events: tuple[PrefectEventsStandIn, str], receiver_factory: Callable[..., Receiver]
) -> None:
    stand_in, api = prefect_events
    receiver = receiver_factory(api)
    started = time.perf_counter()
    response = receiver.post()
    elapsed = time.perf_counter() - started
    assert response.status_code == 202, response.text
    assert elapsed < 1.0
    event_id = str(uuid.uuid5(EVENT_ID_NAMESPACE, HEADERS["Idempotency-Key"]))
    assert response.json() == {"status": "accepted", "event_id": event_id}

    wait_until(lambda: len(stand_in.received()) == 1)
    settle()
    [event] = stand_in.received()
    occurred = datetime.fromisoformat(event.pop("occurred"))
    assert occurred.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - occurred) < timedelta(minutes=1)
    assert event == {
        "id": event_id,
        "event": "gitlab.release.create",
        "resource": {
            "prefect.resource.id": "gitlab.release.2.v1.1",
            "prefect.resource.name": "gitlab-org/release-webhook-example v1.1",
            "gitlab.project": "gitlab-org/release-webhook-example",
            "gitlab.instance": "https://gitlab.example.com",
        },
        "related": [],
        "payload": {
            "action": "create",
            "tag": "v1.1",
            "name": "v1.1",
            "description": "v1.1 has been released",
            "url": "https://example.com/gitlab-org/release-webhook-example/-/releases/v1.1",
            "released_at": "2020-11-02T12:55:12+00:00",
            "project": {
                "id": 2,
                "path_with_namespace": "gitlab-org/release-webhook-example",
                "web_url": "https://example.com/gitlab-org/release-webhook-example",
            },
            "delivery": "f5e5f430-f57b-4e6e-9fac-d9128cd7232f",
        },
    }
    health = receiver.health()
    assert health["status"] == "ok"
    assert health["pending"] == 0 and health["oldest_pending_seconds"] is None
    assert health["prefect"] == "reachable"


def test_resend_is_a_duplicate_also_after_restart(
    prefect_events: tuple[PrefectEventsStandIn, str], receiver_factory: Callable[..., Receiver]
) -> None:
    stand_in, api = prefect_events
    first = receiver_factory(api)
    accepted = first.post()
    assert accepted.status_code == 202
    event_id = accepted.json()["event_id"]
    # A resend keeps Idempotency-Key but gets a new webhook UUID.
    again = first.post(X_Gitlab_Webhook_UUID=str(uuid.uuid4()))
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "event_id": event_id}
    wait_until(lambda: len(stand_in.received()) == 1)
    stop(first)

    second = receiver_factory(api)
    after_restart = second.post()
    assert after_restart.status_code == 200
    assert after_restart.json() == {"status": "duplicate", "event_id": event_id}
    settle()
    assert len(stand_in.received()) == 1


@pytest.mark.parametrize(
    ("drop", "expected_delivery"),
    [
        (("Idempotency-Key",), "13792a34-cac6-4fda-95a8-c58e00a3954e"),
        (("Idempotency-Key", "X-Gitlab-Event-UUID"), "sha256:"),
    ],
)
def test_delivery_key_fallbacks(
    prefect_events: tuple[PrefectEventsStandIn, str],
    receiver_factory: Callable[..., Receiver],
    drop: tuple[str, ...],
    expected_delivery: str,
) -> None:
    stand_in, api = prefect_events
    receiver = receiver_factory(api)
    assert receiver.post(drop=drop).status_code == 202
    assert receiver.post(drop=drop).json()["status"] == "duplicate"
    wait_until(lambda: len(stand_in.received()) == 1)
    settle()
    [event] = stand_in.received()
    assert event["payload"]["delivery"].startswith(expected_delivery)
    assert event["id"] == str(uuid.uuid5(EVENT_ID_NAMESPACE, event["payload"]["delivery"]))


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_wrong_or_missing_token_is_refused(
    prefect_events: tuple[PrefectEventsStandIn, str],
    receiver_factory: Callable[..., Receiver],
    caplog: pytest.LogCaptureFixture,
    token: str | None,
) -> None:
    caplog.set_level(logging.DEBUG, logger="tminus.webhook")
    stand_in, api = prefect_events
    receiver = receiver_factory(api)
    if token is None:
        response = receiver.post(drop=("X-Gitlab-Token",))
    else:
        response = receiver.post(X_Gitlab_Token=token)
    assert response.status_code == 401
    assert response.json() == {"error": "invalid X-Gitlab-Token"}
    assert receiver.health()["pending"] == 0
    # Nothing was stored: the right token now gets the delivery accepted, not a duplicate.
    assert receiver.post().status_code == 202
    wait_until(lambda: len(stand_in.received()) == 1)
    assert TOKEN not in caplog.text and TOKEN not in response.text
    if token:
        assert token not in caplog.text
    assert "missing or wrong X-Gitlab-Token" in caplog.text


def test_no_token_configured_accepts_and_warns(
    prefect_events: tuple[PrefectEventsStandIn, str],
    receiver_factory: Callable[..., Receiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tminus.webhook")
    _, api = prefect_events
    receiver = receiver_factory(api, token=None)
    assert receiver.post(drop=("X-Gitlab-Token",)).status_code == 202
    assert "no webhook token configured" in caplog.text


def test_other_events_are_ignored_with_2xx(
    prefect_events: tuple[PrefectEventsStandIn, str], receiver_factory: Callable[..., Receiver]
) -> None:
    stand_in, api = prefect_events
    receiver = receiver_factory(api)
    response = receiver.post(TAG_PUSH, X_Gitlab_Event="Tag Push Hook")
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert "Tag Push Hook" in response.json()["reason"]
    assert receiver.health()["pending"] == 0
    settle()
    assert stand_in.received() == [] and stand_in.posts == 0


def without(path: str) -> dict[str, Any]:
    payload = copy.deepcopy(RELEASE)
    *parents, last = path.split(".")
    node = payload
    for part in parents:
        node = node[part]
    del node[last]
    return payload


def with_value(path: str, value: Any) -> dict[str, Any]:
    payload = copy.deepcopy(RELEASE)
    *parents, last = path.split(".")
    node = payload
    for part in parents:
        node = node[part]
    node[last] = value
    return payload


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (without("project"), "project: missing"),
        (without("project.path_with_namespace"), "project.path_with_namespace: missing"),
        (with_value("action", "explode"), "action: got 'explode'"),
        (with_value("released_at", "last tuesday"), "released_at: got 'last tuesday'"),
        (without("tag"), "tag: missing"),
    ],
)
def test_invalid_release_payload_names_the_field(
    prefect_events: tuple[PrefectEventsStandIn, str],
    receiver_factory: Callable[..., Receiver],
    payload: dict[str, Any],
    problem: str,
) -> None:
    _, api = prefect_events
    receiver = receiver_factory(api)
    response = receiver.post(payload)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"]
    assert any(p.startswith(problem) for p in body["problems"]), body["problems"]
    assert receiver.health()["pending"] == 0


def test_release_hook_header_with_other_kind_or_bad_json_is_400(
    prefect_events: tuple[PrefectEventsStandIn, str], receiver_factory: Callable[..., Receiver]
) -> None:
    _, api = prefect_events
    receiver = receiver_factory(api)
    assert receiver.post(TAG_PUSH).status_code == 400
    bad_json = receiver.http.post(HOOK_PATH, content=b"{not json", headers=HEADERS)
    assert bad_json.status_code == 400
    assert bad_json.json()["error"].startswith("body is not valid JSON: Expecting property name")
    assert receiver.post([RELEASE]).status_code == 400


def test_body_too_large_is_413(
    prefect_events: tuple[PrefectEventsStandIn, str], receiver_factory: Callable[..., Receiver]
) -> None:
    _, api = prefect_events
    receiver = receiver_factory(api, max_body_bytes=2_000)
    big = with_value("description", "x" * 5_000)
    declared = receiver.post(big)
    assert declared.status_code == 413

    # No Content-Length (chunked): the limit is enforced while reading.
    def chunks() -> Iterator[bytes]:
        data = json.dumps(big).encode()
        for i in range(0, len(data), 500):
            yield data[i : i + 500]

    chunked = receiver.http.post(HOOK_PATH, content=chunks(), headers=HEADERS)
    assert chunked.status_code == 413
    assert receiver.health()["pending"] == 0
    # A small delivery still goes through on the same receiver.
    assert receiver.post().status_code == 202


def test_prefect_down_keeps_the_delivery_and_sends_it_once_back_up(
    prefect_events: tuple[PrefectEventsStandIn, str], receiver_factory: Callable[..., Receiver]
) -> None:
    stand_in, api = prefect_events
    stand_in.up = False
    receiver = receiver_factory(api)
    started = time.perf_counter()
    response = receiver.post()
    assert response.status_code == 202
    assert time.perf_counter() - started < 1.0
    wait_until(lambda: stand_in.posts >= 2)  # the sender tried, and retried
    health = receiver.health()
    assert health["status"] == "ok"
    assert health["pending"] == 1
    assert health["oldest_pending_seconds"] >= 0
    assert health["prefect"] == "unreachable"
    assert "503" in health["last_send_error"]

    stand_in.up = True
    wait_until(lambda: len(stand_in.received()) == 1)
    settle()
    assert [e["id"] for e in stand_in.received()] == [response.json()["event_id"]]
    health = receiver.health()
    assert health["pending"] == 0 and health["prefect"] == "reachable"
    assert health["last_send_error"] is None


def test_prefect_unreachable_is_healthy_not_5xx(
    tmp_path: Path, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory(f"http://127.0.0.1:{free_port()}/api")
    assert receiver.post().status_code == 202
    health = receiver.health()
    assert health["pending"] == 1 and health["prefect"] == "unreachable"


def test_killed_receiver_sends_accepted_delivery_after_restart(tmp_path: Path) -> None:
    """SIGKILL right after the 202 (Prefect unreachable): the next receiver sends the event."""
    db = tmp_path / "outbox.sqlite3"
    events_port = free_port()
    api = f"http://127.0.0.1:{events_port}/api"
    port = free_port()
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from pydantic import SecretStr\n"
        "from tminus.deployments.webhook import WebhookConfig, serve\n"
        "config = WebhookConfig(token=SecretStr(os.environ['HOOK_TOKEN']),"
        " prefect_api_url=sys.argv[1], db_path=Path(sys.argv[2]), send_interval=0.05,"
        " max_backoff=0.2)\n"
        "serve(config, port=int(sys.argv[3]))\n"
    )
    log = (tmp_path / "receiver.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, api, str(db), str(port)],
        cwd=ROOT,
        env={**os.environ, "HOOK_TOKEN": TOKEN},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=15)
        response = httpx.post(
            f"{url}{HOOK_PATH}", content=json.dumps(RELEASE).encode(), headers=HEADERS
        )
        assert response.status_code == 202
    finally:
        proc.kill()  # SIGKILL: no lifespan shutdown, no flush
        proc.wait(timeout=10)
        log.close()

    stand_in = PrefectEventsStandIn()
    with ThreadedServer(stand_in.app, port=events_port):
        server = LifespanServer(make_config(db, api))
        with server:
            wait_until(lambda: len(stand_in.received()) == 1)
            settle()
            assert [e["id"] for e in stand_in.received()] == [response.json()["event_id"]]
            assert httpx.get(f"{server.url}/healthz").json()["pending"] == 0


def test_event_prefect_refuses_is_set_aside_not_blocking(
    tmp_path: Path,
    prefect_events: tuple[PrefectEventsStandIn, str],
    receiver_factory: Callable[..., Receiver],
) -> None:
    """A row Prefect answers 422 for is kept as 'rejected'; later deliveries still go out."""
    stand_in, api = prefect_events
    db = tmp_path / "outbox.sqlite3"
    outbox = Outbox(db)
    outbox.add("poison", str(uuid.uuid4()), json.dumps({"event": "no id, no resource"}))
    outbox.close()
    receiver = receiver_factory(api, db_path=db)
    assert receiver.post().status_code == 202
    wait_until(lambda: len(stand_in.received()) == 1)
    assert stand_in.received()[0]["event"] == "gitlab.release.create"
    health = receiver.health()
    assert health["pending"] == 0 and health["rejected"] == 1
    reopened = Outbox(db)
    poison = reopened.get("poison")
    reopened.close()
    assert poison is not None and poison.status == "rejected"
    assert poison.last_error is not None and "422" in poison.last_error


def test_answers_stay_fast(
    prefect_events: tuple[PrefectEventsStandIn, str], receiver_factory: Callable[..., Receiver]
) -> None:
    """Every answer is durable (fsync) and still far under GitLab's 10 s."""
    stand_in, api = prefect_events
    receiver = receiver_factory(api)
    timings = []
    for n in range(20):
        started = time.perf_counter()
        response = receiver.post(Idempotency_Key=f"delivery-{n}")
        timings.append(time.perf_counter() - started)
        assert response.status_code == 202
    assert max(timings) < 1.0, timings
    wait_until(lambda: len(stand_in.received()) == 20)
    # Sent in the order they were accepted.
    assert [e["payload"]["delivery"] for e in stand_in.received()] == [
        f"delivery-{n}" for n in range(20)
    ]


def test_gitlab_time_format_and_iso_are_parsed() -> None:
    hook = ReleaseHook.model_validate(RELEASE)
    assert hook.released_at == datetime(2020, 11, 2, 12, 55, 12, tzinfo=UTC)
    iso = ReleaseHook.model_validate(with_value("released_at", "2020-11-02T13:55:12+01:00"))
    assert iso.released_at == hook.released_at
    with pytest.raises(ValidationError):
        ReleaseHook.model_validate(with_value("released_at", "2020-11-02 12:55:12"))


# --- hostile and malformed input: always a 4xx that names the problem, never a 5xx --------------


def _deep(levels: int) -> bytes:
    """The release with one more field nested ``levels`` deep."""
    body = json.dumps(RELEASE).encode()
    return body[:-1] + b', "deep": ' + b"[" * levels + b"]" * levels + b"}"


def _release_bytes(**changes: Any) -> bytes:
    return json.dumps({**RELEASE, **changes}).encode()


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        pytest.param(_deep(1_000), {}, 400, "deeper than 32 levels", id="nested-1000"),
        pytest.param(_deep(100_000), {}, 400, "deeper than 32 levels", id="nested-100000"),
        pytest.param(
            _release_bytes(released_at="9999-12-31T23:59:59-23:59"),
            {},
            422,
            "released_at: got '9999-12-31T23:59:59-23:59': is out of range",
            id="released-at-overflows",
        ),
        pytest.param(
            _release_bytes(released_at="0001-01-01 00:00:00 UTC"),
            {},
            422,
            "released_at: got '0001-01-01 00:00:00 UTC': is out of range",
            id="released-at-too-early",
        ),
        pytest.param(
            # Accepted, it would start a run that fails: the release day is the launch day.
            _release_bytes(released_at="2101-01-01 00:00:00 UTC"),
            {},
            422,
            "released_at: got '2101-01-01 00:00:00 UTC': is out of range; give a time between "
            "2000-01-01 and 2100-12-31",
            id="released-at-beyond-launch-days",
        ),
        pytest.param(
            _release_bytes(released_at=1604321712),
            {},
            422,
            "released_at: got 1604321712: is not a time",
            id="released-at-number",
        ),
        pytest.param(
            json.dumps(with_value("project.id", 10**30)).encode(),
            {},
            400,
            "more than 20 digits",
            id="project-id-10**30",
        ),
        pytest.param(
            json.dumps(with_value("project.id", 2**31)).encode(),
            {},
            422,
            "project.id: got 2147483648: Input should be less than or equal to 2147483647",
            id="project-id-2**31",
        ),
        pytest.param(
            json.dumps(with_value("project.id", True)).encode(),
            {},
            422,
            "project.id: got True",
            id="project-id-true",
        ),
        pytest.param(
            _release_bytes(tag="../x"),
            {},
            422,
            "tag: got '../x': is not a valid git tag name",
            id="tag-dotdot",
        ),
        pytest.param(_release_bytes(tag="-x"), {}, 422, "tag: got '-x'", id="tag-dash"),
        pytest.param(_release_bytes(tag="v1\x01"), {}, 422, "tag: got 'v1\\x01'", id="tag-control"),
        pytest.param(
            _release_bytes(url="javascript:alert(1)"),
            {},
            422,
            "url: got 'javascript:alert(1)'",
            id="url-scheme",
        ),
        pytest.param(
            _release_bytes(name="n" * 1025), {}, 422, "name: got 'nnn", id="name-too-long"
        ),
        pytest.param(
            _release_bytes(description="bad \ud800 notes"),
            {},
            422,
            "description: got 'bad \\ud800 notes': contains an unpaired surrogate",
            id="lone-surrogate",
        ),
        pytest.param(
            _release_bytes(tag=5),
            {},
            422,
            "tag: got 5: Input should be a valid string",
            id="wrong-type",
        ),
        pytest.param(
            b'{"object_kind": "release", "x": \xff}',
            {},
            400,
            "body is not UTF-8 (byte 32)",
            id="bad-utf8",
        ),
        pytest.param(
            json.dumps(RELEASE).encode("utf-16"), {}, 400, "body is not UTF-8", id="utf-16"
        ),
        pytest.param(_release_bytes()[:-1] + b', "x": NaN}', {}, 400, "NaN is not JSON", id="nan"),
        pytest.param(
            _release_bytes()[:-1] + b', "tag": "../x"}',
            {},
            400,
            "key 'tag' appears twice in one object",
            id="duplicate-key",
        ),
        pytest.param(b"", {}, 400, "body is not valid JSON", id="empty"),
        pytest.param(
            b"[" * 20 + b"]" * 20, {}, 400, "body must be a JSON object, got list", id="array"
        ),
        pytest.param(
            _release_bytes(),
            {"Content-Type": "text/plain"},
            415,
            "Content-Type must be application/json",
            id="text-plain",
        ),
        pytest.param(
            _release_bytes(),
            {"Content-Type": "application/json; charset=latin-1"},
            415,
            "got 'application/json; charset=latin-1'",
            id="charset",
        ),
        pytest.param(
            _release_bytes(),
            {"Idempotency-Key": "k" * 300},
            400,
            "idempotency-key is longer than 255",
            id="long-key",
        ),
        pytest.param(
            _release_bytes(),
            [("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
            400,
            "header idempotency-key is sent 2 times with different values",
            id="two-keys",
        ),
        pytest.param(
            _release_bytes(),
            [("X-Gitlab-Token", "wrong"), ("X-Gitlab-Token", TOKEN)],
            400,
            "header x-gitlab-token is sent 2 times",
            id="two-tokens",
        ),
    ],
)
def test_malformed_deliveries_get_a_4xx_naming_the_problem(
    prefect_events: tuple[PrefectEventsStandIn, str],
    receiver_factory: Callable[..., Receiver],
    body: bytes,
    headers: dict[str, str] | list[tuple[str, str]],
    status: int,
    says: str,
) -> None:
    _, api = prefect_events
    receiver = receiver_factory(api)
    pairs = list(headers.items()) if isinstance(headers, dict) else headers
    replaced = {name.lower() for name, _ in pairs}
    sent = [(k, v) for k, v in HEADERS.items() if k.lower() not in replaced] + pairs
    response = receiver.http.post(HOOK_PATH, content=body, headers=sent)
    assert response.status_code == status, response.text
    answer = response.json()
    assert any(says in text for text in [answer["error"], *answer.get("problems", [])]), answer
    assert receiver.health()["pending"] == 0


def test_a_900_kb_description_is_delivered_as_a_run_prefect_accepts(
    prefect_events: tuple[PrefectEventsStandIn, str], receiver_factory: Callable[..., Receiver]
) -> None:
    """The run gets the fields on-release uses, the notes as an excerpt that keeps the
    Launch-Tier line: far under Prefect's 512 KiB parameter limit."""
    from tminus.domain.release import DESCRIPTION_MAX_CHARS, Release, tier_from_description
    from tminus.domain.request import Tier

    stand_in, api = prefect_events
    receiver = receiver_factory(api)
    notes = "Dark mode for everyone.\n" + "A changelog line.\n" * 50_000 + "Launch-Tier: L2\n"
    assert len(notes) > 900_000
    response = receiver.post(with_value("description", notes))
    assert response.status_code == 202, response.text
    wait_until(lambda: len(stand_in.received()) == 1)
    [event] = stand_in.received()
    assert len(json.dumps(event)) < 16 * 1024
    parameters = run_parameters(event)
    release = Release.model_validate(parameters["release"])
    assert release.description is not None and len(release.description) <= DESCRIPTION_MAX_CHARS
    assert release.description.startswith("Launch-Tier: L2\nDark mode for everyone.\n")
    assert tier_from_description(release.description) is Tier.L2


def test_the_body_limit_is_enforced_with_413_and_the_default_fits_gitlabs_largest_notes(
    prefect_events: tuple[PrefectEventsStandIn, str], receiver_factory: Callable[..., Receiver]
) -> None:
    """GitLab allows release notes of 1,000,000 characters: they are accepted (and cut);
    a body over the limit is refused up front, before it is read."""
    _, api = prefect_events
    receiver = receiver_factory(api)
    assert receiver.post(with_value("description", "x" * 1_000_000)).status_code == 202
    too_big = receiver.post(with_value("description", "x" * 2_100_000), Idempotency_Key="big")
    assert too_big.status_code == 413
    assert too_big.json() == {"error": "body larger than 2097152 bytes"}


def test_half_a_body_is_answered_408_at_the_deadline(
    prefect_events: tuple[PrefectEventsStandIn, str], receiver_factory: Callable[..., Receiver]
) -> None:
    _, api = prefect_events
    receiver = receiver_factory(api, body_timeout=0.5)
    head = "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
    request = f"POST {HOOK_PATH} HTTP/1.1\r\nHost: x\r\n{head}Content-Length: 1000\r\n\r\n"
    answer, seconds = raw_exchange(receiver.server.port, request.encode() + b'{"object_kind": ')
    status, body = status_and_json(answer)
    assert status == 408
    assert body == {"error": "the body did not arrive within 0.5 s; send it in one go"}
    assert 0.4 < seconds < 2.0
    assert receiver.health()["pending"] == 0


@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /hooks/gitlab HTTP/1.1\r\nHost: x\r\nX-Gitlab-Event: Rel"],
    ids=["nothing", "half-a-head"],
)
def test_a_slow_client_cannot_hold_a_connection(
    prefect_events: tuple[PrefectEventsStandIn, str],
    receiver_factory: Callable[..., Receiver],
    sent: bytes,
) -> None:
    """uvicorn alone waits forever for a request's head; the receiver closes after its
    header_timeout, with a JSON 408 when part of a head came."""
    _, api = prefect_events
    receiver = receiver_factory(api, header_timeout=0.5)
    answer, seconds = raw_exchange(receiver.server.port, sent)
    assert 0.4 < seconds < 2.0
    if sent:
        status, body = status_and_json(answer)
        assert status == 408 and "did not arrive within 0.5 s" in body["error"]
    else:
        assert answer == b""
    # After a complete exchange, an idle keep-alive connection is closed too.
    answer, seconds = raw_exchange(
        receiver.server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in answer
    assert 0.4 < seconds < 2.0


def test_malformed_http_gets_a_json_400(
    prefect_events: tuple[PrefectEventsStandIn, str], receiver_factory: Callable[..., Receiver]
) -> None:
    _, api = prefect_events
    receiver = receiver_factory(api)
    request = (
        b"POST /hooks/gitlab HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
    )
    answer, _ = raw_exchange(receiver.server.port, request + b"hello")
    status, body = status_and_json(answer)
    assert status == 400 and body["error"].startswith("malformed HTTP request")
    for method, path in (("GET", HOOK_PATH), ("POST", "/elsewhere")):
        response = receiver.http.request(method, path)
        assert response.status_code in (404, 405)
        assert "deliveries go to POST /hooks/gitlab" in response.json()["error"]


@pytest.mark.e2e
def test_real_prefect_server_accepts_the_event(
    prefect_server: str, receiver_factory: Callable[..., Receiver]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventIDFilter

    receiver = receiver_factory(prefect_server)
    response = receiver.post(Idempotency_Key=f"e2e-{uuid.uuid4()}")
    assert response.status_code == 202
    event_id = uuid.UUID(response.json()["event_id"])
    # Sent means Prefect answered 2xx; a shape it refuses would be 422 and "rejected".
    wait_until(lambda: receiver.health()["pending"] == 0, timeout=10)
    assert receiver.health()["rejected"] == 0

    found: list[Any] = []

    def stored() -> bool:
        with get_client(sync_client=True) as client:
            # limit: the client's default (100) is above the server's maximum (50): 422.
            page = client.read_events(filter=EventFilter(id=EventIDFilter(id=[event_id])), limit=50)
        found[:] = page.events
        return bool(found)

    wait_until(stored, timeout=30)  # the event persister flushes every few seconds
    [event] = found
    assert event.event == "gitlab.release.create"
    assert event.resource.id == "gitlab.release.2.v1.1"
    assert event.resource["gitlab.project"] == "gitlab-org/release-webhook-example"
    assert event.payload["tag"] == "v1.1"
    assert event.payload["project"]["id"] == 2
    assert event.payload["released_at"] == "2020-11-02T12:55:12+00:00"


# --- the depth of a JSON text, measured before parsing -----------------------------------------

_JSON_VALUES = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ax\n'),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text('[]{}"\\a'), inner, max_size=3)
    ),
    max_leaves=20,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None, derandomize=True)
@given(value=_JSON_VALUES)
def test_json_depth_is_exact_for_any_json(value: Any) -> None:
    """Brackets inside strings (with escaped quotes and backslashes) do not count."""
    assert json_depth(json.dumps(value).encode()) == _depth(value)


@pytest.mark.parametrize(
    "body",
    [
        b'"' + b'\\"' * 1_000_000,  # one unterminated string full of escaped quotes
        b"[]" * 1_000_000,
        b'["' * 500_000,
        b"[" * 2_000_000,
    ],
    ids=["escaped-quotes", "flat-brackets", "open-strings", "all-open"],
)
def test_json_depth_takes_linear_time_on_hostile_bodies(body: bytes) -> None:
    started = time.perf_counter()
    json_depth(body)
    assert time.perf_counter() - started < 1.0


def test_concurrent_deliveries_share_commits_and_each_answer_is_its_own(
    prefect_events: tuple[PrefectEventsStandIn, str], receiver_factory: Callable[..., Receiver]
) -> None:
    """60 deliveries at once (every third a resend of another): each accepted one is stored
    once and each resend is a duplicate, however the writes were grouped into commits (how
    much they group depends on the disk: benchmarks/webhook_ingest.py prints it)."""
    from concurrent.futures import ThreadPoolExecutor

    from tminus.deployments.outbox import Outbox

    stand_in, api = prefect_events
    receiver = receiver_factory(api)
    keys = [f"burst-{n // 3 * 3}" if n % 3 == 2 else f"burst-{n}" for n in range(60)]
    commits: list[int] = []
    original = Outbox.add_many

    def counted(self: Outbox, rows: Any) -> list[bool]:
        commits.append(len(rows))
        return original(self, rows)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Outbox, "add_many", counted)
        with ThreadPoolExecutor(30) as pool:
            answers = list(
                pool.map(lambda key: receiver.post(Idempotency_Key=key).status_code, keys)
            )
    assert sum(commits) == 60
    unique = len(set(keys))
    assert answers.count(202) == unique and answers.count(200) == 60 - unique
    wait_until(lambda: len(stand_in.received()) == unique)
    settle()
    assert len(stand_in.received()) == unique


def test_add_many_refuses_a_key_stored_before_or_earlier_in_the_batch(tmp_path: Path) -> None:
    from tminus.deployments.outbox import Outbox

    outbox = Outbox(tmp_path / "o.sqlite3")
    try:
        assert outbox.add("a", "ea", "{}")
        assert outbox.add_many([("b", "eb", "{}"), ("a", "ea", "{}"), ("b", "eb", "{}")]) == [
            True,
            False,
            False,
        ]
        assert [r.delivery_key for r in outbox.pending()] == ["a", "b"]
    finally:
        outbox.close()


def test_pending_deliveries_go_out_in_batches_and_a_refused_batch_row_by_row(
    tmp_path: Path,
    prefect_events: tuple[PrefectEventsStandIn, str],
    receiver_factory: Callable[..., Receiver],
) -> None:
    """Deliveries that waited for Prefect go out several per request, in order; a batch
    Prefect refuses as malformed is sent again row by row, so only the bad row is set aside."""
    stand_in, api = prefect_events
    db = tmp_path / "outbox.sqlite3"
    stand_in.up = False
    receiver = receiver_factory(api, db_path=db)
    keys = [f"waiting-{n}" for n in range(12)]
    for key in keys[:6]:
        assert receiver.post(Idempotency_Key=key).status_code == 202
    poison = Outbox(db)  # a malformed row between good ones
    poison.add("poison", str(uuid.uuid4()), json.dumps({"event": "no id, no resource"}))
    poison.close()
    for key in keys[6:]:
        assert receiver.post(Idempotency_Key=key).status_code == 202
    posts_while_down = stand_in.posts
    stand_in.up = True
    wait_until(lambda: len(stand_in.received()) == 12, timeout=10)
    sent = [e["payload"]["delivery"] for e in stand_in.received()]
    assert sent == keys  # in order, the poison left out
    # one refused batch of 13, then 13 single posts: far from one post per delivery twice
    assert stand_in.posts - posts_while_down <= 1 + 13 + 2
    health = receiver.health()
    assert health["pending"] == 0 and health["rejected"] == 1


def test_a_burst_reaches_prefect_in_few_requests(
    prefect_events: tuple[PrefectEventsStandIn, str], receiver_factory: Callable[..., Receiver]
) -> None:
    stand_in, api = prefect_events
    stand_in.up = False
    receiver = receiver_factory(api)
    for n in range(40):
        assert receiver.post(Idempotency_Key=f"burst-{n}").status_code == 202
    before = stand_in.posts
    stand_in.up = True
    wait_until(lambda: len(stand_in.received()) == 40, timeout=10)
    assert stand_in.posts - before <= 3  # 40 events in one or two requests (and a retry)


def test_events_wait_while_deliveries_keep_arriving_then_go_out_together(
    prefect_events: tuple[PrefectEventsStandIn, str], receiver_factory: Callable[..., Receiver]
) -> None:
    """During a burst the answers come first: the sender holds the events while deliveries
    keep arriving (for BURST_HOLD_SECONDS at most), then sends them in a few requests."""
    stand_in, api = prefect_events
    receiver = receiver_factory(api)
    assert receiver.post(Idempotency_Key="lone").status_code == 202
    wait_until(lambda: len(stand_in.received()) == 1, timeout=5)  # a lone one goes at once
    before = stand_in.posts
    started = time.monotonic()
    for n in range(40):  # one after another, well under QUIET_SECONDS apart
        assert receiver.post(Idempotency_Key=f"arriving-{n}").status_code == 202
    burst = time.monotonic() - started
    during = stand_in.posts - before
    wait_until(lambda: len(stand_in.received()) == 41, timeout=BURST_HOLD_SECONDS + 5)
    # Without the hold each delivery wakes the sender: about one request per delivery.
    assert during <= 1 + int(burst / BURST_HOLD_SECONDS), (during, burst)
    assert stand_in.posts - before <= 4
