"""Scale-out, end to end: the production layout on one machine, all on 127.0.0.1.

A throwaway PostgreSQL cluster; `prefect server start` on it; a `process` work pool `tminus`
with the deployments of prefect.yaml (`prefect deploy --all`); TWO `prefect worker start`
processes (one flow run at a time each, so overlapping runs must spread over both); the
webhook receiver; the stand-ins for GitLab, Calendar, Slack and the docs. Then, through the
workers: the same launch started twice at once (its runs land on both workers and meet at the
launch lock), a GitLab release delivered to the receiver (its trigger starts on-release), and
the audit. Every run completes, GitLab holds exactly one issue per key, both workers took
runs, and the GitLab limit shared by the workers (TMINUS_GITLAB_GLOBAL_LIMIT) was created and
left no slot taken.

PostgreSQL comes from Debian's `postgresql` package (binaries under /usr/lib/postgresql/*/bin;
`.ci/run` installs it). Without it the test is skipped, except in CI (CI=true), where that is
a failure. As root, the cluster runs as the `postgres` user (PostgreSQL refuses root).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tminus.domain.issues import split_description
from tminus.integrations.gitlab import GLOBAL_LIMIT_NAME
from tminus_sandbox.app import free_port

from .conftest import ROOT, SandboxClient, sandbox_env
from .postgres import PREFECT, postgres_cluster, prefect_server, start, stop
from .postgres import postgres_bin as find_postgres_bin
from .test_e2e_serve import TOKEN, _up, delivery, wait_for
from .test_launch_everything import retarget

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

WORKERS = ("worker-a", "worker-b")
GLOBAL_LIMIT = 2


def postgres_bin() -> Path:
    """The folder of PostgreSQL's server programs (initdb, pg_ctl); skip without them, but
    fail in CI, where .ci/run installs them."""
    folder = find_postgres_bin()
    if folder is not None:
        return folder
    if os.environ.get("CI"):
        raise AssertionError(
            "CI must install PostgreSQL (apt-get install postgresql, see .ci/run): no initdb "
            "or pg_ctl on PATH or under /usr/lib/postgresql/*/bin"
        )
    pytest.skip("needs PostgreSQL's initdb and pg_ctl (apt-get install postgresql)")


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway cluster on a free port of 127.0.0.1 (tests/postgres.py); yields the
    SQLAlchemy URL for Prefect. As root it runs as `postgres`, from a folder that user owns
    (pytest's temporary folders are root's own, mode 0700)."""
    bin_dir = postgres_bin()
    folder = None if os.geteuid() == 0 else tmp_path_factory.mktemp("postgres")
    with postgres_cluster(bin_dir, folder) as url:
        yield url


def tail(path: Path, chars: int = 3000) -> str:
    return f"--- {path.name} ---\n{path.read_text(errors='replace')[-chars:]}"


@pytest.fixture(scope="module")
def layout(
    postgres: str,
    sandbox_server: SandboxClient,
    no_approval_playbook: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """Prefect server on PostgreSQL, the work pool and deployments, two workers, the
    receiver; yields where they are."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    sandbox_server.reset()
    sandbox_server.sandbox.slack.rate_limit = None
    logs = tmp_path_factory.mktemp("logs")
    home = tmp_path_factory.mktemp("prefect-home")
    hook_port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TMINUS_"))}
    server_env = {
        **base,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    procs: list[subprocess.Popen[bytes]] = []
    with (
        prefect_server(postgres, server_env, logs / "server.log") as api,
        contextlib.ExitStack() as cleanup,
    ):
        cleanup.callback(lambda: stop(procs[::-1]))
        prefect_env = {**server_env, "PREFECT_API_URL": api}

        def cli(*argv: str, env: dict[str, str] = prefect_env) -> None:
            done = subprocess.run(
                [*PREFECT, *argv],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            assert done.returncode == 0, f"prefect {' '.join(argv)}:\n{done.stdout}{done.stderr}"

        cli("work-pool", "create", "tminus", "--type", "process")
        cli("--no-prompt", "deploy", "--all", env={**prefect_env, "TMINUS_CHECKOUT": str(ROOT)})
        tminus_env = {
            **prefect_env,
            **sandbox_env(sandbox_server.url),
            "TMINUS_PLAYBOOK": str(no_approval_playbook),
            "TMINUS_AUDIT_PROJECTS": "marketing/launches,gitlab-org/release-webhook-example",
            "TMINUS_GITLAB_GLOBAL_LIMIT": str(GLOBAL_LIMIT),
            "TMINUS_WEBHOOK_TOKEN": TOKEN,
        }
        for name in WORKERS:
            procs.append(
                start(
                    [
                        *PREFECT,
                        "worker",
                        "start",
                        "--pool",
                        "tminus",
                        "--name",
                        name,
                        "--limit",
                        "1",
                    ],
                    {
                        **tminus_env,
                        "PREFECT_WORKER_QUERY_SECONDS": "1",
                        "TMINUS_HOME": str(tmp_path_factory.mktemp(name)),
                    },
                    logs / f"{name}.log",
                )
            )
        procs.append(
            start(
                [sys.executable, "-m", "tminus", "webhook", "--port", str(hook_port)],
                {**tminus_env, "TMINUS_HOME": str(tmp_path_factory.mktemp("receiver"))},
                logs / "webhook.log",
            )
        )
        hook = f"http://127.0.0.1:{hook_port}"
        wait_for(lambda: _up(hook), 60, "the webhook receiver")
        with temporary_settings({PREFECT_API_URL: api}):
            wait_for(lambda: len(online_workers()) == 2, 60, "both workers online")
            yield {"api": api, "hook": hook, "logs": logs, "url": postgres}


def stored_flow_runs(url: str) -> int:
    import asyncio

    import asyncpg

    async def count() -> int:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return int(await connection.fetchval("SELECT count(*) FROM flow_run"))
        finally:
            await connection.close()

    return asyncio.run(count())


def online_workers() -> set[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {w.name for w in client.read_workers_for_work_pool("tminus")}


def flow_run(run_id: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def deployment_runs(name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(name)
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        )


def finished(run_id: Any, timeout: float, logs: Path) -> Any:
    def final() -> Any:
        run = flow_run(run_id)
        return run if run.state and run.state.is_final() else None

    try:
        return wait_for(final, timeout, f"flow run {run_id} to finish")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}: {flow_run(run_id).state}\n"
            + "\n".join(tail(logs / f"{w}.log") for w in WORKERS)
        ) from None


@pytest.mark.timeout(900)
def test_two_workers_on_postgres_run_launch_release_and_audit(
    layout: dict[str, Any], sandbox_server: SandboxClient, l1: Any
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    logs: Path = layout["logs"]
    with get_client(sync_client=True) as client:
        deployments = {d.name for d in client.read_deployments()}
        assert deployments == {
            "launch",
            "on-release",
            "recommend-tier",
            "preview",
            "apply-launches",
            "audit",
        }
        assert client.read_work_pool("tminus").type == "process"

    # The same launch twice at once, and a GitLab release, all through the workers.
    request = retarget(l1, sandbox_server.url).model_dump(mode="json")
    launches = [
        run_deployment(name="launch/launch", parameters={"request": request}, timeout=0)
        for _ in range(2)
    ]
    payload, headers = delivery()
    answer = httpx.post(f"{layout['hook']}/hooks/gitlab", json=payload, headers=headers)
    assert answer.status_code == 202, answer.text
    release = wait_for(lambda: deployment_runs("on-release/on-release"), 30, "the on-release run")
    assert len(release) == 1

    runs = [*launches, release[0]]
    for run in runs:
        final = finished(run.id, 300, logs)
        assert final.state.is_completed(), f"{final.name}: {final.state}\n" + "\n".join(
            tail(logs / f"{w}.log") for w in WORKERS
        )
    audit = run_deployment(name="audit/audit", timeout=0)
    final = finished(audit.id, 180, logs)
    assert final.state.is_completed(), f"audit: {final.state}"
    runs.append(audit)

    # Every run was picked up by a worker, and the overlapping launches by both.
    taken = {
        name: {str(r.id) for r in runs if str(r.id) in (logs / f"{name}.log").read_text()}
        for name in WORKERS
    }
    assert set().union(*taken.values()) == {str(r.id) for r in runs}, taken
    assert all(taken.values()), f"a worker took no run: {taken}"
    assert {str(launches[0].id), str(launches[1].id)} not in [set(t) for t in taken.values()]

    # GitLab: exactly one issue per key, for the launch and for the release, each created
    # once (the second launch waited at the launch lock, then found everything done).
    gl = sandbox_server.gitlab()
    for project, title in (
        ("marketing/launches", "Launch: Code Review Agent (L1, 2027-03-16)"),
        ("gitlab-org/release-webhook-example", "Launch: v1.1 (L3, 2020-11-02)"),
    ):
        issues = gl.projects.get(project).issues.list(get_all=True, state="all")
        keys = Counter(split_description(i.description or "")[1] for i in issues)
        assert None not in keys and len(keys) >= 5, keys
        assert max(keys.values()) == 1, {k: n for k, n in keys.items() if n > 1}
        creates = [
            r
            for r in sandbox_server.writes(f"/api/v4/projects/{project.replace('/', '%2F')}/")
            if r["method"] == "POST" and r["path"].endswith("/issues")
        ]
        assert len(creates) == len(keys), (project, len(creates), len(keys))
        assert title in [i.title for i in issues]
        # the audit went through the open launch: its tracking issue has a status label
        tracking = [i for i in issues if "launch-issue::tracking" in i.labels]
        assert len(tracking) == 1
        assert any(lbl.startswith("launch-status::") for lbl in tracking[0].labels), (
            project,
            tracking[0].labels,
        )

    # The GitLab bound shared by the workers exists with the setting's slots, none leaked,
    # and no run went without it.
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(GLOBAL_LIMIT_NAME)
    assert limit.limit == GLOBAL_LIMIT and limit.active_slots == 0
    for name in WORKERS:
        assert "is not applied" not in (logs / f"{name}.log").read_text(), tail(
            logs / f"{name}.log"
        )

    # All of it lived in PostgreSQL.
    assert stored_flow_runs(layout["url"]) >= len(runs)
    print(json.dumps({name: sorted(ids) for name, ids in taken.items()}))
