"""GitLab's bound across workers: a Prefect global concurrency limit, one slot per attempt.

Two trackers with their own ``GlobalLimit`` stand for two worker processes (each its own
Prefect client and its own in-process bound); only the limit on the Prefect server is shared.
A GitLab stand-in that answers slowly counts the requests in flight.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tminus.integrations.gitlab import GLOBAL_LIMIT_NAME, GitLabTracker, build_tracker
from tminus.integrations.gitlab import gitlab_client as client_for
from tminus.integrations.global_limit import GlobalLimit
from tminus.integrations.retry import RetryPolicy
from tminus.settings import load_settings


class SlowGitLab:
    """Answers every GET with an empty list after ``delay`` seconds; the first ``refuse``
    requests get a 429 with ``Retry-After: 1``. Counts requests in flight."""

    def __init__(self, delay: float = 0.15, refuse: int = 0) -> None:
        self.delay, self.refuse = delay, refuse
        self.in_flight = self.most = self.served = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with outer.lock:
                    outer.in_flight += 1
                    outer.most = max(outer.most, outer.in_flight)
                    refused = outer.refuse > 0
                    outer.refuse -= refused
                try:
                    time.sleep(outer.delay)
                    body = b"[]" if not refused else b'{"message": "429 Too Many Requests"}'
                    self.send_response(429 if refused else 200)
                    if refused:
                        self.send_header("Retry-After", "1")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1
                        outer.served += 1

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> SlowGitLab:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def limit_name(prefect_server: str) -> Iterator[str]:
    name = f"test-gitlab-{uuid.uuid4().hex[:8]}"
    yield name
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name(name)


def tracker(url: str, shared: GlobalLimit | None, concurrency: int = 4) -> GitLabTracker:
    return GitLabTracker(client_for(url, "t"), concurrency=concurrency, shared=shared)


def hammer(trackers: list[GitLabTracker], calls: int) -> None:
    try:
        with ThreadPoolExecutor(max_workers=4 * len(trackers)) as pool:
            jobs = [
                pool.submit(trackers[i % len(trackers)].list_issues, "grp/proj", ["x"])
                for i in range(calls)
            ]
            for job in jobs:
                job.result()
    finally:
        for one in trackers:
            one.close()


def test_two_workers_never_exceed_the_shared_limit(limit_name: str) -> None:
    with SlowGitLab() as gitlab:
        # Two "workers", each its own limit object (own Prefect client) and its own bound of 4.
        workers = [tracker(gitlab.url, GlobalLimit(limit_name, 2)) for _ in range(2)]
        hammer(workers, 24)
        assert gitlab.served == 24
        assert gitlab.most == 2

    with SlowGitLab() as gitlab:  # the same load without the shared limit: up to 4 + 4
        hammer([tracker(gitlab.url, None) for _ in range(2)], 24)
        assert gitlab.most > 2


def test_the_setting_creates_the_limit_and_wins(prefect_server: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    with SlowGitLab(delay=0) as gitlab:
        env = {"TMINUS_GITLAB_URL": gitlab.url, "TMINUS_GITLAB_GLOBAL_LIMIT": "3"}
        built = build_tracker(load_settings(env))
        built.list_issues("grp/proj", ["x"])
        built.close()
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(GLOBAL_LIMIT_NAME)
            assert limit.limit == 3 and limit.active and limit.active_slots == 0
            client.update_global_concurrency_limit(
                GLOBAL_LIMIT_NAME, GlobalConcurrencyLimitUpdate(limit=9)
            )
            # A new process (a new limit object) sets it back to the setting.
            again = tracker(gitlab.url, GlobalLimit(GLOBAL_LIMIT_NAME, 3))
            again.list_issues("grp/proj", ["x"])
            again.close()
            assert client.read_global_concurrency_limit_by_name(GLOBAL_LIMIT_NAME).limit == 3
            client.delete_global_concurrency_limit_by_name(GLOBAL_LIMIT_NAME)


def test_no_slot_is_held_while_waiting_to_retry(limit_name: str) -> None:
    from prefect.client.orchestration import get_client

    held_during_waits = []

    def sleep(seconds: float) -> None:
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(limit_name)
            held_during_waits.append(limit.active_slots)

    with SlowGitLab(delay=0, refuse=2) as gitlab:
        shared = GlobalLimit(limit_name, 1)
        one = GitLabTracker(
            client_for(gitlab.url, "t"), retry=RetryPolicy(sleep=sleep), shared=shared
        )
        assert one.list_issues("grp/proj", ["x"]) == []
        one.close()
        assert gitlab.served == 3
    assert held_during_waits == [0, 0]


def test_without_a_reachable_prefect_calls_run_under_the_local_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tminus_sandbox.app import free_port

    caplog.set_level(logging.WARNING, "tminus.global_limit")
    with SlowGitLab(delay=0) as gitlab:
        for api in (None, f"http://127.0.0.1:{free_port()}/api"):  # unset, then nothing there
            caplog.clear()
            with temporary_settings({PREFECT_API_URL: api}):
                one = tracker(gitlab.url, GlobalLimit(f"offline-{uuid.uuid4().hex[:6]}", 1))
                started = time.monotonic()
                for _ in range(5):
                    assert one.list_issues("grp/proj", ["x"]) == []
                assert time.monotonic() - started < 3
                one.close()
            warnings = [r.getMessage() for r in caplog.records]
            assert len(warnings) == 1 and "calls are bounded per process only" in warnings[0]
