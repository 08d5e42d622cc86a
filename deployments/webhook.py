"""The GitLab webhook receiver (``tminus webhook``): Release Hook deliveries become Prefect events.

The open-source Prefect server has no webhooks, so this small ASGI app stands in front of it:

``POST /hooks/gitlab``  check size and ``X-Gitlab-Token``, ignore (2xx) events other than
                        ``Release Hook``, validate the payload, de-duplicate on the delivery key,
                        store the Prefect event in the SQLite outbox, answer 202 at once.
``GET /healthz``        200 while the receiver runs: pending rows, their age, Prefect reachability.

A background sender posts pending outbox rows to ``{prefect_api_url}/events`` and marks them
sent; while Prefect is down they wait on disk and the sender backs off. Delivery to Prefect is
at least once: the event id is a uuid5 of the delivery key, so Prefect's trigger service drops a
repeat it has seen in the last ~30 minutes, and the flow the event starts must be idempotent.

Why answer before Prefect has the event: GitLab waits 10 s, counts 4xx/5xx and timeouts as
failures, disables hooks that keep failing and never redelivers by itself. An answer that
waited for Prefect would turn a Prefect restart into a disabled hook and a lost release.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import uvicorn
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
)
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deployments.outbox import Outbox, OutboxRow
from tminus.validation import describe_validation_error

logger = logging.getLogger("tminus.webhook")

HOOK_PATH = "/hooks/gitlab"
RELEASE_HOOK = "Release Hook"
DEFAULT_PORT = 4282
# Fixed namespace of the event ids: the same delivery key always gives the same event id, in
# every process and after every restart (Prefect's trigger service de-duplicates on it).
EVENT_ID_NAMESPACE = uuid.UUID("6c1f8f0e-2a53-5b1e-9f4e-7d0a8c3b2e41")
# Prefect answers these when the event itself is malformed; retrying cannot help, and keeping
# the row pending would block every later delivery behind it.
REJECTED_STATUSES = frozenset({400, 413, 422})


@dataclass(frozen=True)
class WebhookConfig:
    """What the receiver needs; built from settings by the CLI.

    ``token`` is the secret configured on the GitLab hook; ``None`` accepts every request
    (logged as a warning at start-up). ``prefect_api_url`` ends in ``/api``.
    ``prefect_api_auth_string`` is the ``user:password`` of a Prefect server started with
    ``PREFECT_SERVER_API_AUTH_STRING``. ``max_backoff`` caps the wait between attempts while
    Prefect is unreachable.
    """

    token: SecretStr | None
    prefect_api_url: str
    db_path: Path
    max_body_bytes: int = 1_000_000
    send_interval: float = 0.5
    send_timeout: float = 5.0
    max_backoff: float = 30.0
    prefect_api_auth_string: SecretStr | None = None


# --- the payload -------------------------------------------------------------------------------


def _parse_gitlab_time(value: Any) -> Any:
    """GitLab writes ``2020-11-02 12:55:12 UTC``, not ISO 8601; ISO is still accepted."""
    if isinstance(value, str):
        text = value.strip()
        for fmt in ("%Y-%m-%d %H:%M:%S UTC", "%Y-%m-%d %H:%M:%S %z"):
            try:
                parsed = datetime.strptime(text, fmt)
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return value  # pydantic tries ISO 8601 and names the field if that fails too


GitLabTime = Annotated[AwareDatetime, BeforeValidator(_parse_gitlab_time)]


class HookProject(BaseModel):
    """The ``project`` of a Release Hook; GitLab sends many more fields, all allowed."""

    model_config = ConfigDict(extra="allow")

    id: int
    path_with_namespace: str = Field(min_length=1)
    web_url: str = Field(min_length=1)


class ReleaseHook(BaseModel):
    """A GitLab Release Hook payload (``object_kind: release``); extra fields are allowed."""

    model_config = ConfigDict(extra="allow")

    object_kind: Literal["release"]
    action: Literal["create", "update", "delete"]
    tag: str = Field(min_length=1)
    name: str | None = None
    description: str | None = None
    url: str = Field(min_length=1)
    released_at: GitLabTime
    created_at: GitLabTime | None = None
    project: HookProject


# --- the event ---------------------------------------------------------------------------------


def delivery_key(headers: Any, body: bytes) -> str:
    """What identifies one delivery across resends: ``Idempotency-Key``, else the event UUID,
    else the body's hash (a resend of the same body is then the same delivery)."""
    for name in ("idempotency-key", "x-gitlab-event-uuid"):
        value = (headers.get(name) or "").strip()
        if value:
            return value
    return "sha256:" + hashlib.sha256(body).hexdigest()


def event_id_for(key: str) -> uuid.UUID:
    return uuid.uuid5(EVENT_ID_NAMESPACE, key)


def release_event(
    hook: ReleaseHook, *, key: str, instance: str | None, occurred: datetime
) -> dict[str, Any]:
    """The Prefect event for a release hook; payload values stay JSON-simple (str/int/null) so
    trigger templates read them directly (``{{ event.payload.tag }}``)."""
    project = hook.project
    return {
        "id": str(event_id_for(key)),
        "occurred": occurred.astimezone(UTC).isoformat(),
        "event": f"gitlab.release.{hook.action}",
        "resource": {
            "prefect.resource.id": f"gitlab.release.{project.id}.{hook.tag}",
            "prefect.resource.name": f"{project.path_with_namespace} {hook.tag}",
            "gitlab.project": project.path_with_namespace,
        },
        "related": [],
        "payload": {
            "action": hook.action,
            "tag": hook.tag,
            # GitLab names a release after its tag unless told otherwise; never null here.
            "name": hook.name or hook.tag,
            "description": hook.description or "",
            "url": hook.url,
            "released_at": hook.released_at.astimezone(UTC).isoformat(),
            "project": {
                "id": project.id,
                "path_with_namespace": project.path_with_namespace,
                "web_url": project.web_url,
            },
            "instance": instance,
            "delivery": key,
        },
    }


# --- the sender --------------------------------------------------------------------------------


class EventSender:
    """Posts pending outbox rows to Prefect in order; on failure keeps them and backs off."""

    def __init__(self, outbox: Outbox, config: WebhookConfig) -> None:
        self.outbox = outbox
        self.config = config
        self.api_url = config.prefect_api_url.rstrip("/")
        self.wake = asyncio.Event()
        self.failures = 0
        self.last_error: str | None = None
        headers = {"Content-Type": "application/json"}
        if config.prefect_api_auth_string is not None:
            secret = config.prefect_api_auth_string.get_secret_value().encode()
            headers["Authorization"] = "Basic " + base64.b64encode(secret).decode()
        self.client = httpx.AsyncClient(headers=headers, timeout=config.send_timeout)

    def backoff(self) -> float:
        """Seconds to wait after ``failures`` failed rounds in a row: doubling, capped."""
        exponent = min(self.failures - 1, 20)
        return float(min(self.config.max_backoff, self.config.send_interval * 2**exponent))

    async def run(self) -> None:
        """Drain, then wait for an insert or the next interval; back off while Prefect fails."""
        while True:
            self.wake.clear()
            try:
                delivered = await self.send_pending()
            except Exception as exc:  # a broken database must not kill the loop silently
                logger.exception("webhook sender: unexpected error")
                self.last_error = f"{type(exc).__name__}: {exc}"
                delivered = False
            if delivered:
                if self.failures:
                    logger.info("Prefect reachable again after %d failed rounds", self.failures)
                self.failures = 0
                self.last_error = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=self.config.send_interval)
            else:
                self.failures += 1
                # Wake-ups are ignored here on purpose: new deliveries are safe on disk, and
                # retrying on every one of them would hammer a Prefect that is struggling.
                await asyncio.sleep(self.backoff())

    async def send_pending(self) -> bool:
        """Send every pending row; False at the first one Prefect could not take."""
        while True:
            rows = await asyncio.to_thread(self.outbox.pending, 100)
            if not rows:
                return True
            for row in rows:
                if not await self._send(row):
                    return False

    async def _send(self, row: OutboxRow) -> bool:
        url = f"{self.api_url}/events"
        try:
            response = await self.client.post(url, content=f"[{row.event_json}]".encode())
        except httpx.HTTPError as exc:
            return await self._failed(row, f"{type(exc).__name__}: {exc or 'no answer'}")
        if response.is_success:
            await asyncio.to_thread(self.outbox.mark_sent, row.seq)
            logger.info("sent event %s (delivery %s) to Prefect", row.event_id, row.delivery_key)
            return True
        error = f"Prefect answered {response.status_code}: {response.text[:500]}"
        if response.status_code in REJECTED_STATUSES:
            logger.error("Prefect rejected event %s; kept as 'rejected': %s", row.event_id, error)
            await asyncio.to_thread(self.outbox.mark_failed, row.seq, error, rejected=True)
            return True  # the queue moves on; the row stays in the outbox for a person
        return await self._failed(row, error)

    async def _failed(self, row: OutboxRow, error: str) -> bool:
        if self.failures == 0:
            logger.warning("cannot send event %s to Prefect, will retry: %s", row.event_id, error)
        self.last_error = error
        await asyncio.to_thread(self.outbox.mark_failed, row.seq, error)
        return False

    async def prefect_reachable(self) -> bool:
        try:
            response = await self.client.get(
                f"{self.api_url}/health", timeout=min(2.0, self.config.send_timeout)
            )
        except httpx.HTTPError:
            return False
        return response.is_success

    async def aclose(self) -> None:
        await self.client.aclose()


# --- the app -----------------------------------------------------------------------------------


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _token_ok(expected: SecretStr | None, given: str | None) -> bool:
    if expected is None:
        return True
    if given is None:
        return False
    # Constant time, so the answer's timing says nothing about how much of the token matched.
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None once it passes ``limit`` (a client can lie about Content-Length or
    send chunks without one)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(config: WebhookConfig) -> Starlette:
    """The receiver app; its lifespan runs the sender (serve it with ``lifespan="on"``)."""
    outbox = Outbox(config.db_path)
    sender = EventSender(outbox, config)
    too_large = f"body larger than {config.max_body_bytes} bytes"

    async def gitlab_hook(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return _error(400, "invalid Content-Length")
            if int(declared) > config.max_body_bytes:
                return _error(413, too_large)
        if not _token_ok(config.token, request.headers.get("x-gitlab-token")):
            client = request.client.host if request.client else "?"
            logger.warning("refused a delivery from %s: missing or wrong X-Gitlab-Token", client)
            return _error(401, "invalid X-Gitlab-Token")
        kind = request.headers.get("x-gitlab-event")
        if kind != RELEASE_HOOK:
            # 2xx: GitLab disables hooks that keep getting errors, and this is not one.
            reason = f"X-Gitlab-Event {kind!r} is not handled; only {RELEASE_HOOK!r} is"
            return JSONResponse({"status": "ignored", "reason": reason})
        try:
            body = await _read_limited(request, config.max_body_bytes)
        except ClientDisconnect:
            return Response(status_code=400)
        if body is None:
            return _error(413, too_large)
        try:
            data = json.loads(body)
        except ValueError:
            return _error(400, "body is not valid JSON")
        if not isinstance(data, dict):
            return _error(400, "body must be a JSON object")
        if data.get("object_kind") != "release":
            found = data.get("object_kind")
            return _error(400, f"a {RELEASE_HOOK} must have object_kind 'release', got {found!r}")
        try:
            hook = ReleaseHook.model_validate(data)
        except ValidationError as exc:
            problems = describe_validation_error(exc)
            return _error(422, "release hook payload is not valid", problems=problems)

        key = delivery_key(request.headers, body)
        event = release_event(
            hook,
            key=key,
            instance=request.headers.get("x-gitlab-instance"),
            occurred=datetime.now(UTC),
        )
        event_id = event["id"]
        added = await asyncio.to_thread(
            outbox.add, key, event_id, json.dumps(event, separators=(",", ":"))
        )
        if not added:
            logger.info("duplicate delivery %s (event %s): nothing new", key, event_id)
            return JSONResponse({"status": "duplicate", "event_id": event_id})
        sender.wake.set()
        logger.info(
            "accepted %s for %s (delivery %s, event %s)",
            event["event"],
            event["resource"]["prefect.resource.name"],
            key,
            event_id,
        )
        return JSONResponse({"status": "accepted", "event_id": event_id}, status_code=202)

    async def healthz(request: Request) -> Response:
        # Always 200 while we run: a receiver that is up keeps accepting deliveries even when
        # Prefect is down, so restarting it would not help.
        stats = await asyncio.to_thread(outbox.stats)
        age = stats.oldest_pending_seconds
        return JSONResponse(
            {
                "status": "ok",
                "pending": stats.pending,
                "oldest_pending_seconds": round(age, 3) if age is not None else None,
                "rejected": stats.rejected,
                "prefect": "reachable" if await sender.prefect_reachable() else "unreachable",
                "last_send_error": sender.last_error,
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if config.token is None:
            logger.warning(
                "no webhook token configured: every request to %s is accepted", HOOK_PATH
            )
        task = asyncio.create_task(sender.run(), name="tminus-webhook-sender")
        try:
            yield
        finally:
            # No flush on the way out: pending rows are on disk and go out on the next start.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await sender.aclose()
            outbox.close()

    return Starlette(
        routes=[
            Route(HOOK_PATH, gitlab_hook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def serve(config: WebhookConfig, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Run the receiver in the foreground until interrupted (``tminus webhook``)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logger.setLevel(logging.INFO)
    uvicorn.run(create_app(config), host=host, port=port, log_level="info", lifespan="on")
