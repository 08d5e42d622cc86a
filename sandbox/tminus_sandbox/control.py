"""What every stand-in shares: a request log and fault injection, exposed under ``/_sandbox/``.

``GET  /_sandbox/requests``        the request log: method, path, status, fault, ms (duration),
                                   start (arrival, epoch seconds); ``?since=N`` pages on
``DELETE /_sandbox/requests``      clear the log
``GET|PUT /_sandbox/faults``       latency_ms; error_rate (answered error_status, default 502);
                                   rate_limit_rate (429 with Retry-After: retry_after);
                                   after_write_error_rate (the write happens, then a 502: a
                                   lost response); seed; prefix and methods (what is faulted)
``POST /_sandbox/reset``           forget all data, the log and the faults (and queued GitLab
                                   hook deliveries; their log is ``/_sandbox/gitlab/...``,
                                   see tminus_sandbox.gitlab_repo)

Faults apply only to paths under ``prefix`` (default: every stand-in API, never ``/_sandbox``).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send


class Faults(BaseModel):
    latency_ms: int = Field(default=0, ge=0, le=60_000)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: int = Field(default=502, ge=400, le=599)
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1)
    retry_after: int = Field(default=1, ge=0, le=3600)
    after_write_error_rate: float = Field(default=0.0, ge=0, le=1)
    seed: int | None = None
    prefix: str = "/"
    methods: list[str] | None = None  # only these HTTP methods (default: all)


@dataclass
class LoggedRequest:
    seq: int
    method: str
    path: str
    query: str
    status: int
    fault: str | None
    ms: float
    start: float = 0.0  # when the request arrived (time.time(), seconds since the epoch)


@dataclass
class Control:
    """Request log and fault settings of one sandbox process."""

    faults: Faults = field(default_factory=Faults)
    log: list[LoggedRequest] = field(default_factory=list)
    _rng: random.Random = field(default_factory=random.Random)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: int = 0

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)

    def targeted(self, path: str, method: str) -> bool:
        """Whether faults (and added latency) apply to this request."""
        f = self.faults
        if path.startswith("/_sandbox") or not path.startswith(f.prefix):
            return False
        return f.methods is None or method in f.methods

    def draw(self, path: str, method: str) -> str | None:
        """Decide this request's fault: '429', '5xx', 'after-write' or None."""
        f = self.faults
        if not self.targeted(path, method):
            return None
        with self._lock:
            roll = self._rng.random()
        if roll < f.rate_limit_rate:
            return "429"
        roll -= f.rate_limit_rate
        if roll < f.error_rate:
            return "5xx"
        roll -= f.error_rate
        if method in ("POST", "PUT", "PATCH", "DELETE") and roll < f.after_write_error_rate:
            return "after-write"
        return None

    def record(
        self,
        method: str,
        path: str,
        query: str,
        status: int,
        fault: str | None,
        ms: float,
        start: float = 0.0,
    ) -> None:
        if path.startswith("/_sandbox"):
            return
        with self._lock:
            self._seq += 1
            self.log.append(LoggedRequest(self._seq, method, path, query, status, fault, ms, start))

    def clear(self) -> None:
        with self._lock:
            self.log.clear()


class ControlMiddleware:
    """Logs every request and injects the configured faults (pure ASGI, so it sees raw paths)."""

    def __init__(self, app: ASGIApp, control: Control) -> None:
        self.app = app
        self.control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode("latin-1").split("?", 1)[0]
        method = scope["method"]
        query = scope.get("query_string", b"").decode("latin-1")
        arrived = time.time()
        started = time.perf_counter()
        control = self.control
        fault = control.draw(path, method)
        if control.faults.latency_ms and control.targeted(path, method):
            await asyncio.sleep(control.faults.latency_ms / 1000)
        status_box = {"status": 0}

        async def send_logged(message: Any) -> None:
            if message["type"] == "http.response.start":
                status_box["status"] = message["status"]
            await send(message)

        if fault == "429":
            response: Response = Response(
                "Retry later\n",
                status_code=429,
                media_type="text/plain",
                headers={"Retry-After": str(control.faults.retry_after)},
            )
            await response(scope, receive, send_logged)
        elif fault == "5xx":
            status = control.faults.error_status
            await JSONResponse(
                {"message": f"{status} injected by the sandbox"}, status_code=status
            )(scope, receive, send_logged)
        elif fault == "after-write":
            # Run the request for real, swallow its answer, say 502: a lost response.
            async def swallow(message: Any) -> None:
                return None

            await self.app(scope, receive, swallow)
            await JSONResponse({"message": "502 Bad Gateway"}, status_code=502)(
                scope, receive, send_logged
            )
        else:
            await self.app(scope, receive, send_logged)
        elapsed_ms = (time.perf_counter() - started) * 1000
        control.record(method, path, query, status_box["status"], fault, elapsed_ms, arrived)


def control_routes(control: Control, reset_data: Any) -> list[Any]:
    from starlette.routing import Route

    async def requests_log(request: Request) -> Response:
        if request.method == "DELETE":
            control.clear()
            return Response(status_code=204)
        since = int(request.query_params.get("since", "0"))
        rows = [asdict(r) for r in control.log if r.seq > since]
        return JSONResponse(rows)

    async def faults(request: Request) -> Response:
        if request.method == "PUT":
            try:
                control.set_faults(Faults.model_validate(json.loads(await request.body() or b"{}")))
            except (ValidationError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(control.faults.model_dump())

    async def reset(request: Request) -> Response:
        reset_data()
        control.clear()
        control.set_faults(Faults())
        return Response(status_code=204)

    return [
        Route("/_sandbox/requests", requests_log, methods=["GET", "DELETE"]),
        Route("/_sandbox/faults", faults, methods=["GET", "PUT"]),
        Route("/_sandbox/reset", reset, methods=["POST"]),
    ]
