"""Launch benchmark: how long an L1 launch takes and what it costs GitLab, clean and under faults.

    .venv/bin/python benchmarks/launch.py [--faults 0.3] [--latency-ms 20] [--runs 3]

Starts the sandbox in-process and a temporary Prefect server, then prints, per scenario:
wall time of the flow run, GitLab requests by method, faulted requests, and whether the
issues left behind equal a clean run's. Figures, not assertions: speed goals live here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=float, default=0.3, help="share of failing requests")
    parser.add_argument("--latency-ms", type=int, default=0, help="added latency per request")
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After on 429s")
    parser.add_argument("--runs", type=int, default=3, help="repetitions per scenario")
    args = parser.parse_args()

    import gitlab
    import httpx
    import yaml
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from tminus.domain.plan import KEY_MARKER_PATTERN
    from tminus.domain.planner import plan_launch
    from tminus.flows.launch import launch
    from tminus.integrations.files import default_playbook_path, load_launch_file, load_playbook
    from tminus_sandbox.app import ThreadedServer, create_sandbox

    request = load_launch_file(ROOT / "examples" / "l1.yaml")
    playbook = load_playbook()
    started = time.perf_counter()
    for _ in range(1000):
        plan_launch(request, playbook, date(2026, 11, 22))
    per_plan = (time.perf_counter() - started) / 1000 * 1000
    print(f"planner: {per_plan:.2f} ms per L1 plan (pure, 1000 plans)")

    sandbox = create_sandbox(None)
    with (
        ThreadedServer(sandbox.app) as server,
        prefect_test_harness(server_startup_timeout=60),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        url = server.url
        os.environ.update(
            TMINUS_GITLAB_URL=url,
            TMINUS_GITLAB_TOKEN="bench",
            TMINUS_GCAL_ENDPOINT=f"{url}/calendar/v3/",
            TMINUS_SLACK_WEBHOOK_URL=f"{url}/slack/webhook/sales",
            TMINUS_FEATURES_URL=f"{url}/features",
            TMINUS_FEATURES_COMPARE_URL=f"{url}/features/compare",
            TMINUS_PAGES_ALLOWED_HOSTS=server.url.split("://", 1)[1],
            TMINUS_PAGES_ALLOW_PRIVATE="true",
        )
        sandbox.slack.rate_limit = None
        playbook_file = Path(os.environ.get("TMPDIR", "/tmp")) / "tminus-bench-playbook.yaml"
        data = yaml.safe_load(default_playbook_path().read_text())
        data["approval_tiers"] = []  # a benchmark cannot click Resume
        playbook_file.write_text(yaml.safe_dump(data))
        os.environ["TMINUS_PLAYBOOK"] = str(playbook_file)
        http = httpx.Client(base_url=server.url)

        def state() -> set[tuple[Any, ...]]:
            project = gitlab.Gitlab(server.url, private_token="b").projects.get(request.project)
            out = set()
            for issue in project.issues.list(get_all=True, state="all"):
                m = KEY_MARKER_PATTERN.search(issue.description or "")
                out.add(
                    (
                        m.group(1) if m else None,
                        issue.title,
                        issue.due_date,
                        tuple(sorted(issue.labels)),
                        issue.state,
                    )
                )
            return out

        def scenario(name: str, faults: dict[str, Any], fresh: bool) -> set[tuple[Any, ...]]:
            times, methods, faulted, totals = [], Counter[str](), 0, 0
            final: set[tuple[Any, ...]] = set()
            for _ in range(args.runs):
                if fresh:
                    http.post("/_sandbox/reset")
                    http.put(
                        "/_sandbox/faults",
                        json={"latency_ms": args.latency_ms, "prefix": "/api/v4"},
                    )
                    if name.startswith("re-run"):
                        launch(request=request)
                # GitLab's requests are faulted; Calendar, Slack and pages have their own tests.
                http.put(
                    "/_sandbox/faults",
                    json={"latency_ms": args.latency_ms, "prefix": "/api/v4", **faults},
                )
                http.delete("/_sandbox/requests")
                t0 = time.perf_counter()
                launch(request=request)
                times.append(time.perf_counter() - t0)
                rows = [
                    r
                    for r in http.get("/_sandbox/requests").json()
                    if r["path"].startswith("/api/v4")
                ]
                http.put("/_sandbox/faults", json={})
                methods.update(r["method"] for r in rows)
                faulted += sum(1 for r in rows if r["fault"])
                totals += len(rows)
                final = state()
            n = args.runs
            by_method = ", ".join(f"{m} {c / n:.0f}" for m, c in sorted(methods.items()))
            by_method = f"GitLab {by_method}"
            print(
                f"{name:<34} {statistics.median(times):6.2f} s median "
                f"(min {min(times):.2f}, max {max(times):.2f})  requests/run: {by_method}"
                + (f"  faulted {faulted / totals:.0%}" if faulted else "")
            )
            return final

        print(
            f"\nL1 launch ({len(plan_launch(request, playbook, date(2026, 11, 22)).all_issues)}"
            f" issues), {args.runs} runs each, latency {args.latency_ms} ms/request"
        )
        clean = scenario("first run (clean GitLab)", {}, fresh=True)
        scenario("re-run, nothing changed", {}, fresh=True)
        half = args.faults / 2
        faulty = scenario(
            f"first run, {args.faults:.0%} of requests failing",
            {
                "error_rate": half * 0.7,
                "after_write_error_rate": half * 0.3,
                "rate_limit_rate": half,
                "retry_after": args.retry_after,
            },
            fresh=True,
        )
        print(
            f"\nissues after the faulty runs equal a clean run's: {faulty == clean} "
            f"({len(faulty)} issues)"
        )


if __name__ == "__main__":
    main()
