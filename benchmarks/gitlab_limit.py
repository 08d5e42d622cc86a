"""What the GitLab limit shared across workers costs per call.

    .venv/bin/python benchmarks/gitlab_limit.py [--calls 200] [--latency-ms 0] [--api URL]

Runs ``--calls`` GitLab reads (``list_issues``) one after another against the local stand-in
(in-process; with no latency added, the worst case for relative cost), three ways: the in-process
bound only; with ``TMINUS_GITLAB_GLOBAL_LIMIT`` (tminus's ``GlobalLimit``: take a leased slot,
release it); and with Prefect's ``prefect.concurrency.sync.concurrency`` helper instead (lease
renewal thread and two events per call). Then 8 threads on two "workers" sharing a limit of 4.
Prints milliseconds per call (median, p95) and the added cost. Uses ``--api`` (any Prefect
server, PostgreSQL or SQLite) or starts a temporary one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "sandbox"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


class PrefectHelper:
    """The same ``hold`` as ``GlobalLimit``, through Prefect's own context manager."""

    def __init__(self, name: str) -> None:
        self.name = name

    def hold(self, timeout: float) -> AbstractContextManager[None]:
        from prefect.concurrency.sync import concurrency

        return concurrency(self.name, occupy=1, timeout_seconds=timeout, lease_duration=60)


def timed(call: Callable[[], object], calls: int) -> list[float]:
    call()  # warm: connections, the limit's creation
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def figures(ms: list[float]) -> tuple[float, float]:
    ms = sorted(ms)
    return statistics.median(ms), ms[int(len(ms) * 0.95) - 1]


@contextmanager
def prefect_api(api: str | None) -> Iterator[str]:
    from prefect.settings import PREFECT_API_URL

    if api:  # set in the environment by main(), as on a worker
        yield api
        return
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield str(PREFECT_API_URL.value())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per variant")
    parser.add_argument("--latency-ms", type=int, default=0, help="added GitLab latency")
    parser.add_argument("--api", help="a Prefect API URL (default: a temporary server)")
    args = parser.parse_args()
    if args.api:  # before Prefect reads its settings: every thread sees it, as on a worker
        os.environ["PREFECT_API_URL"] = args.api

    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from tminus.integrations.gitlab import GitLabTracker, gitlab_client
    from tminus.integrations.global_limit import GlobalLimit
    from tminus_sandbox.app import ThreadedServer, create_sandbox

    with ThreadedServer(create_sandbox(None).app) as sandbox, prefect_api(args.api) as api:
        if args.latency_ms:
            faults = {"latency_ms": args.latency_ms, "prefix": "/api/v4"}
            httpx.put(f"{sandbox.url}/_sandbox/faults", json=faults).raise_for_status()
        name = f"bench-gitlab-{uuid.uuid4().hex[:8]}"
        with get_client(sync_client=True) as client:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=4))

        def tracker(shared: object) -> GitLabTracker:
            return GitLabTracker(gitlab_client(sandbox.url, "t"), shared=shared)  # type: ignore[arg-type]

        variants = {
            "in-process bound only": tracker(None),
            "GlobalLimit (tminus)": tracker(GlobalLimit(name, 4)),
            "prefect concurrency()": tracker(PrefectHelper(name)),
        }
        print(
            f"Prefect API {api}; {args.calls} sequential GitLab reads per variant (stand-in, "
            f"+{args.latency_ms} ms)"
        )
        base = None
        for label, one in variants.items():
            median, p95 = figures(
                timed(lambda one=one: one.list_issues("bench/proj", ["x"]), args.calls)
            )
            base = median if base is None else base
            extra = "" if median == base else f"   +{median - base:.1f} ms per call"
            print(f"  {label:24} median {median:6.1f} ms   p95 {p95:6.1f} ms{extra}")

        for label, shared in (
            ("no shared limit", lambda: None),
            ("GlobalLimit of 4", lambda: GlobalLimit(name, 4)),
        ):
            workers = [tracker(shared()) for _ in range(2)]
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=8) as pool:
                jobs = [
                    pool.submit(workers[i % 2].list_issues, "bench/proj", ["x"])
                    for i in range(args.calls)
                ]
                for job in jobs:
                    job.result()
            took = time.perf_counter() - started
            print(
                f"  2 workers x 4 threads, {label:17}: {args.calls / took:6.0f} calls/s"
                f" ({took:.1f} s)"
            )
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(name)


if __name__ == "__main__":
    main()
