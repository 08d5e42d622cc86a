"""Shared fixtures: one sandbox server and one Prefect test server per session, real HTTP."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gitlab
import httpx
import pytest
import yaml

from tminus.domain.playbook import Playbook
from tminus.domain.request import LaunchRequest
from tminus.integrations.files import default_playbook_path, load_launch_file, load_playbook
from tminus.settings import Settings, load_settings, use_settings
from tminus_sandbox.app import Sandbox, ThreadedServer, create_sandbox

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TODAY = date(2026, 11, 22)

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


class SandboxClient:
    """The sandbox over HTTP, as tests and benchmarks see it."""

    def __init__(self, url: str, sandbox: Sandbox) -> None:
        self.url = url
        self.sandbox = sandbox
        self.http = httpx.Client(base_url=url, timeout=10)
        self._gitlab: gitlab.Gitlab | None = None

    def reset(self) -> None:
        self.http.post("/_sandbox/reset").raise_for_status()

    def faults(self, **faults: Any) -> None:
        self.http.put("/_sandbox/faults", json=faults).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.http.get("/_sandbox/requests").json()
        return rows

    def clear_log(self) -> None:
        self.http.delete("/_sandbox/requests").raise_for_status()

    def writes(self, prefix: str = "/") -> list[dict[str, Any]]:
        return [
            r
            for r in self.requests()
            if r["method"] in ("POST", "PUT", "PATCH", "DELETE")
            and r["path"].startswith(prefix)
            and r["path"] != "/api/graphql"  # GitLab's GraphQL: tminus only reads with it
        ]

    def hook_deliveries(self, *, flush: bool = True) -> list[dict[str, Any]]:
        """GitLab hook deliveries, oldest first; by default after the queue has drained."""
        if flush:
            self.http.post("/_sandbox/gitlab/hook_deliveries/flush").raise_for_status()
        rows: list[dict[str, Any]] = self.http.get("/_sandbox/gitlab/hook_deliveries").json()
        return rows

    def resend_hook_delivery(self, delivery_id: int) -> dict[str, Any]:
        response = self.http.post(f"/_sandbox/gitlab/hook_deliveries/{delivery_id}/resend")
        response.raise_for_status()
        row: dict[str, Any] = response.json()
        return row

    def gitlab(self) -> gitlab.Gitlab:
        """One python-gitlab client for the session (closed with it, not left to the GC)."""
        if self._gitlab is None:
            self._gitlab = gitlab.Gitlab(
                self.url, private_token="test", retry_transient_errors=True
            )
        return self._gitlab

    def close(self) -> None:
        self.http.close()
        if self._gitlab is not None:
            self._gitlab.session.close()


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxClient]:
    sandbox = create_sandbox(None)
    with ThreadedServer(sandbox.app) as server:
        client = SandboxClient(server.url, sandbox)
        yield client
        client.close()


@pytest.fixture
def sandbox(sandbox_server: SandboxClient) -> SandboxClient:
    """The session's sandbox, emptied: no data, no log, no faults, no Slack rate limit
    (tests/test_slack.py covers that)."""
    sandbox_server.reset()
    sandbox_server.sandbox.slack.rate_limit = None
    return sandbox_server


@pytest.fixture(scope="session")
def no_approval_playbook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default playbook with no approval gate, for flow tests that are not about it."""
    data = yaml.safe_load(default_playbook_path().read_text())
    data["approval_tiers"] = []
    path = tmp_path_factory.mktemp("playbook") / "no-approval.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sandbox_env(url: str) -> dict[str, str]:
    """Every system tminus talks to, pointed at the sandbox at ``url``."""
    return {
        "TMINUS_GITLAB_URL": url,
        "TMINUS_GITLAB_TOKEN": "test-token",
        "TMINUS_GCAL_ENDPOINT": f"{url}/calendar/v3/",
        "TMINUS_SLACK_WEBHOOK_URL": f"{url}/slack/webhook/sales",
        "TMINUS_FEATURES_URL": f"{url}/features",
        "TMINUS_FEATURES_COMPARE_URL": f"{url}/features/compare",
        "TMINUS_PAGES_ALLOWED_HOSTS": urlsplit(url).netloc,
        "TMINUS_PAGES_ALLOW_PRIVATE": "true",
        "TMINUS_TIMEZONE": "UTC",
        # Retries as in production, without the production waits.
        "TMINUS_RETRY_BACKOFF": "0.01",
    }


@pytest.fixture
def settings_env(sandbox: SandboxClient, no_approval_playbook: Path) -> dict[str, str]:
    """The settings as environment variables, for processes a test starts."""
    return {**sandbox_env(sandbox.url), "TMINUS_PLAYBOOK": str(no_approval_playbook)}


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Iterator[Settings]:
    """Settings pointing at the sandbox; flows a test calls run with them (``use_settings``)."""
    with use_settings(load_settings(settings_env)) as given:
        yield given


@pytest.fixture(scope="session")
def playbook() -> Playbook:
    return load_playbook()


@pytest.fixture
def l1() -> LaunchRequest:
    return load_launch_file(EXAMPLES / "l1.yaml")


@pytest.fixture
def l2() -> LaunchRequest:
    return load_launch_file(EXAMPLES / "l2.yaml")


@pytest.fixture
def l3() -> LaunchRequest:
    return load_launch_file(EXAMPLES / "l3.yaml")


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """One Prefect test server for the whole session, heartbeats off (0.2 s per flow call)."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    with (
        prefect_test_harness(server_startup_timeout=60),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield str(PREFECT_API_URL.value())
