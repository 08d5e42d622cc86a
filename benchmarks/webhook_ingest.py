"""Webhook ingest benchmark: a burst of GitLab release deliveries, acknowledged and made runs.

    .venv/bin/python benchmarks/webhook_ingest.py [--deliveries 1000] [--concurrency 50]
                                                  [--resend 0.1] [--seed 7]

Starts a temporary real Prefect server (``prefect server start`` with all its services, on its
own SQLite file under a temporary PREFECT_HOME), registers the ``on-release`` deployment with
its release trigger exactly as ``tminus serve`` declares it (``build_deployments``) but serves
nothing, and runs the receiver as ``python -m tminus webhook`` (uvicorn on 127.0.0.1) in front
of it. Then sends the deliveries from this process, at most ``--concurrency`` in flight, each
on a fresh connection as GitLab does (a lean HTTP/1.1 POST on asyncio's streams: the sender
shares the machine with what it measures), with the real release payload and headers of
tests/fixtures/, one tag and one ``Idempotency-Key`` per unique delivery, and ``--resend`` of
them sent again later with the same key and body, as a person resending from GitLab does.

Prints the machine (CPUs, Python, Prefect, load), the answers by status, the acknowledgement
latency (p50, p99, max; measured by the sender: connect, send, answer), the CPU time the
receiver (per delivery), the sender and the Prefect server spent during the burst (from
/proc), and after draining:
what the receiver's outbox sent to Prefect, and the flow runs the deployment trigger created,
against the unique deliveries (lost = unique deliveries without a run, doubled = runs beyond
one per delivery), and the trigger actions Prefect itself reports failed
(``prefect.automation.action.failed``: it does not retry them). The runs are counted, not
executed: nothing serves the deployment, so they stay Scheduled; what is measured is
receiver -> outbox -> Prefect event -> trigger -> run.
Figures, not assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import exit_on_sigterm, free_port, machine  # noqa: E402

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

FIXTURES = ROOT / "tests" / "fixtures"
TOKEN = "bench-hook-token"
PREFECT_SERVER = [sys.executable, "-m", "prefect", "server", "start"]


def wait_for(check: Callable[[], Any], timeout: float, what: str, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise SystemExit(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.25)


def up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def deliveries(n: int, resend: float, seed: int) -> tuple[list[tuple[str, bytes]], int]:
    """``n`` deliveries as (Idempotency-Key, body): unique ones, and resends of some of them
    placed at a random point after their first sending. Returns them and the unique count."""
    rng = random.Random(seed)
    payload = json.loads((FIXTURES / "gitlab_release_create.json").read_text())
    resends = round(n * resend)
    unique = n - resends
    firsts: list[tuple[str, bytes]] = []
    for i in range(unique):
        tag = f"v{i // 100}.{i % 100}.0"
        body = {
            **payload,
            "tag": tag,
            "name": tag,
            "url": f"{payload['project']['web_url']}/-/releases/{tag}",
        }
        key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        firsts.append((key, json.dumps(body).encode()))
    sequence = list(firsts)
    for original in rng.sample(firsts, resends):
        after = sequence.index(original) + 1
        sequence.insert(rng.randint(after, len(sequence)), original)
    return sequence, unique


async def post(port: int, headers: dict[str, str], body: bytes) -> int:
    """One delivery as GitLab makes it: a fresh connection, one POST, read the answer, close.
    Written on asyncio's streams rather than with httpx: the sender shares this machine's 2
    CPUs with the receiver it measures (GitLab's senders run elsewhere), and httpx spent 1.2 ms
    of CPU per delivery, more than the receiver (about 0.9 ms)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(
            f"POST /hooks/gitlab HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        status_line = await reader.readline()
        await reader.read()  # the rest of the answer, up to the receiver's close
        return int(status_line.split()[1])
    finally:
        writer.close()


async def send_all(
    url: str, sequence: list[tuple[str, bytes]], concurrency: int
) -> tuple[list[float], Counter[int], float]:
    base = json.loads((FIXTURES / "gitlab_webhook_headers_release.json").read_text())
    base["X-Gitlab-Token"] = TOKEN
    port = int(url.rsplit(":", 1)[1])
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()

    async def one(key: str, body: bytes) -> None:
        headers = {
            **base,
            "Idempotency-Key": key,
            "X-Gitlab-Event-UUID": key,
            "X-Gitlab-Webhook-UUID": str(uuid.uuid4()),  # new per delivery, resends too
        }
        async with gate:
            t0 = time.perf_counter()
            try:
                status = await asyncio.wait_for(post(port, headers, body), timeout=30)
            except (OSError, TimeoutError, ValueError, IndexError):
                status = 0
            latencies.append(time.perf_counter() - t0)
            statuses[status] += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(key, body) for key, body in sequence))
    elapsed = time.perf_counter() - started
    return latencies, statuses, elapsed


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux), else None."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return None
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=1000, help="requests in all")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight at once")
    parser.add_argument("--resend", type=float, default=0.1, help="share of requests that resend")
    parser.add_argument("--seed", type=int, default=7, help="seed of the keys and the order")
    parser.add_argument(
        "--state", type=Path, help="keep state and logs here (default: a temporary folder)"
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=1800, help="seconds to wait for every run"
    )
    args = parser.parse_args()

    import httpx

    print(machine())
    sequence, unique = deliveries(args.deliveries, args.resend, args.seed)
    with ExitStack() as stack:
        if args.state:
            tmp = args.state.resolve()
            tmp.mkdir(parents=True, exist_ok=True)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tminus-ingest-")))
        prefect_port, hook_port = free_port(), free_port()
        api = f"http://127.0.0.1:{prefect_port}/api"
        base_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TMINUS_"))
        }
        server = start(
            [*PREFECT_SERVER, "--host", "127.0.0.1", "--port", str(prefect_port)],
            {
                **base_env,
                "PREFECT_HOME": str(tmp / "prefect"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_API_PORT": str(prefect_port),
                "PREFECT_UI_API_URL": api,
            },
            tmp / "prefect.log",
        )
        stack.callback(stop, server)
        t0 = time.monotonic()
        wait_for(lambda: up(f"{api}/health"), 120, "the Prefect server", tmp / "prefect.log")
        print(f"Prefect server up in {time.monotonic() - t0:.1f} s ({api})")

        # Prefect read its settings at import (machine() imported it): set the URL in them.
        from prefect.settings import PREFECT_API_URL, temporary_settings

        stack.enter_context(temporary_settings({PREFECT_API_URL: api}))
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        from tminus.deployments.serve import build_deployments
        from tminus.settings import load_settings

        settings = load_settings({"TMINUS_HOME": str(tmp / "home")})
        [on_release] = [d for d in build_deployments(settings) if d.name == "on-release"]
        deployment_id = on_release.apply()
        by_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))

        receiver = start(
            [sys.executable, "-m", "tminus", "webhook", "--port", str(hook_port)],
            {
                **base_env,
                "PREFECT_API_URL": api,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "TMINUS_HOME": str(tmp / "home"),
                "TMINUS_WEBHOOK_TOKEN": TOKEN,
                "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT)),
            },
            tmp / "webhook.log",
        )
        stack.callback(stop, receiver)
        hook = f"http://127.0.0.1:{hook_port}"
        wait_for(lambda: up(f"{hook}/healthz"), 60, "the receiver", tmp / "webhook.log")

        def run_count() -> int:
            with get_client(sync_client=True) as client:
                return client.count_flow_runs(deployment_filter=by_deployment)

        # One warm-up delivery: the trigger is loaded and the path works before the clock runs.
        warm, _ = deliveries(1, 0, seed=args.seed + 1)
        asyncio.run(send_all(hook, warm, 1))
        t0 = time.monotonic()
        wait_for(run_count, 120, "the warm-up run", tmp / "prefect.log")
        print(f"warm-up delivery -> run in {time.monotonic() - t0:.1f} s")

        resends = len(sequence) - unique
        print(
            f"\nsending {len(sequence)} deliveries ({unique} unique, {resends} resent with "
            f"the same Idempotency-Key), {args.concurrency} in flight, fresh connection each"
        )
        cpu_before = cpu_seconds(receiver.pid)
        others_before = cpu_seconds(os.getpid()), cpu_seconds(server.pid)
        latencies, statuses, elapsed = asyncio.run(send_all(hook, sequence, args.concurrency))
        sent_at = time.monotonic()
        cpu_after = cpu_seconds(receiver.pid)
        others_after = cpu_seconds(os.getpid()), cpu_seconds(server.pid)
        print(
            f"sent in {elapsed:.1f} s ({len(sequence) / elapsed:.0f} deliveries/s); answers: "
            + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
        )
        print(
            f"ack latency: p50 {pct(latencies, 0.5) * 1000:.1f} ms, "
            f"p99 {pct(latencies, 0.99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms, "
            f"mean {statistics.mean(latencies) * 1000:.1f} ms"
        )
        if cpu_before is not None and cpu_after is not None:
            print(
                f"receiver CPU during the burst: {cpu_after - cpu_before:.2f} s, "
                f"{(cpu_after - cpu_before) / len(sequence) * 1000:.2f} ms per delivery "
                "(answering, plus the events it sent to Prefect meanwhile)"
            )
        spent = [
            after - before
            for before, after in zip(others_before, others_after, strict=True)
            if before is not None and after is not None
        ]
        if len(spent) == 2:
            print(
                f"CPU of the others during the burst: this sender {spent[0]:.2f} s, "
                f"the Prefect server {spent[1]:.2f} s (the machine had "
                f"{elapsed * (os.cpu_count() or 1):.2f} s on {os.cpu_count()} CPUs)"
            )

        def drained() -> bool:
            health = httpx.get(f"{hook}/healthz", timeout=5).json()
            return health["pending"] == 0

        wait_for(drained, args.drain_timeout, "the outbox to drain", tmp / "webhook.log")
        print(
            "outbox drained (every accepted delivery sent to Prefect) "
            f"{time.monotonic() - sent_at:.1f} s after the last answer"
        )
        from tminus.deployments.outbox import Outbox

        outbox = Outbox(tmp / "home" / "webhook" / "outbox.sqlite3")
        stats = outbox.stats()
        outbox.close()

        expected = unique + 1  # the warm-up's run too
        last = [-1, time.monotonic()]

        def settled() -> bool:
            count = run_count()
            now = time.monotonic()
            if count != last[0]:
                last[:] = [count, now]
            # every run is there, and nothing more came for 10 s (a double would show by then)
            return count >= expected and now - last[1] >= 10

        deadline = time.monotonic() + args.drain_timeout
        while not settled() and time.monotonic() < deadline:
            time.sleep(1)
        if last[0] < expected:
            print(f"! gave up waiting after {args.drain_timeout:.0f} s: the figures are partial")
        runs_done = last[1] - sent_at

        with get_client(sync_client=True) as client:
            runs: list[Any] = []
            while True:
                page = client.read_flow_runs(
                    deployment_filter=by_deployment, limit=200, offset=len(runs)
                )
                runs += page
                if len(page) < 200:
                    break
            # Prefect's own account of trigger actions that failed (it does not retry them).
            from prefect.events.filters import EventFilter, EventNameFilter

            failed = client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=["prefect.automation.action.failed"])
                ),
                limit=50,
            )
            reasons = Counter(str(e.payload.get("reason")) for e in failed.events)
        wanted = {key for key, _ in sequence}
        per_delivery = Counter(
            r.parameters.get("release", {}).get("delivery")
            for r in runs
            if r.parameters.get("release", {}).get("delivery") in wanted
        )
        states = Counter(r.state.type.value if r.state else "?" for r in runs)
        lost = len(wanted - set(per_delivery))
        doubled = sum(n - 1 for n in per_delivery.values() if n > 1)
        print(
            f"outbox: {stats.sent} sent to Prefect (warm-up included), {stats.pending} pending, "
            f"{stats.rejected} rejected"
        )
        print(
            f"runs created by the trigger for the burst: {sum(per_delivery.values())} for "
            f"{len(wanted)} unique deliveries: lost {lost}, doubled {doubled}; the last one "
            f"{runs_done:.1f} s after the last answer "
            f"({', '.join(f'{s} {n}' for s, n in states.items())})"
        )
        print(
            f"trigger actions Prefect reports failed: {failed.total}"
            + "".join(f"\n  {n} x {reason}" for reason, n in reasons.items())
        )


if __name__ == "__main__":
    main()
