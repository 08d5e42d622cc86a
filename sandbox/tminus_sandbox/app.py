"""The sandbox: every local stand-in in one ASGI app on one loopback port.

``/api/v4/...`` GitLab (issues; repositories, merge requests, statuses and hooks) ·
``/<project>/-/issues/<iid>`` and ``/<project>/-/merge_requests/<iid>`` as web pages ·
``/calendar/v3/...`` Google Calendar (``/calendar/`` the launch calendar as a page) ·
``/slack/webhook/<token>`` a Slack incoming webhook (``/slack/`` what sales received) ·
``/docs/...``, ``/features``, ``/features/compare`` a small docs site ·
``/_sandbox/...`` request log, fault injection, reset · ``/healthz``.
It is the embedded default (``tminus sandbox``) and the test bed (tests start it in a thread).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tminus_sandbox.control import Control, ControlMiddleware, control_routes
from tminus_sandbox.docs_site import docs_site_routes
from tminus_sandbox.gcal import GCalStore, gcal_routes
from tminus_sandbox.gitlab import (
    GitLabApi,
    GitLabStore,
    RawPathMiddleware,
    gitlab_routes,
    issue_pages,
)
from tminus_sandbox.gitlab_repo import (
    HookDispatcher,
    RepoApi,
    RepoStore,
    merge_request_pages,
    repo_routes,
)
from tminus_sandbox.slack import SlackStore, slack_routes


@dataclass
class Sandbox:
    app: Any
    control: Control
    gitlab: GitLabStore
    repo: RepoStore
    hooks: HookDispatcher
    calendar: GCalStore
    slack: SlackStore


def create_sandbox(
    data_dir: str | Path | None, *, gitlab_token: str | None = None, auto_create: bool = True
) -> Sandbox:
    """Build the app. ``data_dir=None`` keeps state in memory (tests that need a blank slate)."""

    def db(name: str) -> str | Path:
        if data_dir is None:
            return ":memory:"
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        return Path(data_dir) / f"{name}.sqlite3"

    store = GitLabStore(db("gitlab"), auto_create=auto_create)
    calendar = GCalStore(db("calendar"))
    slack = SlackStore(db("slack"))
    control = Control()
    api = GitLabApi(store, token=gitlab_token)
    repo = RepoStore(store)
    hooks = HookDispatcher(repo)
    repo_api = RepoApi(api, repo, hooks)

    def reset() -> None:
        hooks.clear()
        store.reset()
        repo.reset()
        calendar.reset()
        slack.reset()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "stand_ins": ["gitlab", "calendar", "slack", "docs"]})

    routes = [
        Route("/healthz", healthz),
        *control_routes(control, reset),
        *gitlab_routes(api),
        *repo_routes(repo_api),
        *gcal_routes(calendar),
        *docs_site_routes(),
        *slack_routes(slack),
        *merge_request_pages(repo_api),
        *issue_pages(api),  # last: its paths match almost anything
    ]
    app = Starlette(routes=routes)
    wrapped = ControlMiddleware(RawPathMiddleware(app), control)
    return Sandbox(
        app=wrapped,
        control=control,
        gitlab=store,
        repo=repo,
        hooks=hooks,
        calendar=calendar,
        slack=slack,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadedServer:
    """A uvicorn server on 127.0.0.1 in a background thread (tests and benchmarks)."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"sandbox did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve(data_dir: str | Path, port: int, *, gitlab_token: str | None = None) -> None:
    """Run the sandbox in the foreground until interrupted (``tminus sandbox``)."""
    sandbox = create_sandbox(data_dir, gitlab_token=gitlab_token)
    uvicorn.run(sandbox.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
