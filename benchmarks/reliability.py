"""Reliability benchmark: tminus's promises under faults, crashes and an unreachable GitLab.

    .venv/bin/python benchmarks/reliability.py [--launches 10] [--faults 0.3] [--kills 2]

Starts the stand-ins in-process and a temporary Prefect server, then prints figures counted in
the stand-ins (not in tminus's own report):

1. ``--launches`` launches (L1, L2, L3 in turn, each its own slug) with ``--faults`` of every
   request to GitLab, Calendar, Slack and the docs site failing, a third each as 429 with
   ``Retry-After: 1``, 5xx, and lost answers (the write happens, then a 502); then the same
   launches re-run without faults. Duplicates and missing issues, events and Slack messages.
2. ``tminus launch`` killed with SIGKILL at each of four points, ``--kills`` times each, then
   re-run: how long the re-run waited before its first request, duplicates, missing, and the
   state the killed run ended in.
3. GitLab unreachable (connection refused; a port that accepts and never answers): how long
   the launch takes to fail, with the production retry settings.

The checks of the suite (``tests/test_reliability.py``) at a larger scale; figures, not
assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=10)
    parser.add_argument("--faults", type=float, default=0.3, help="share of failing requests")
    parser.add_argument("--kills", type=int, default=2, help="kills per point")
    parser.add_argument("--skip-unreachable", action="store_true")
    args = parser.parse_args()

    import yaml
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from tests.conftest import SandboxClient, sandbox_env
    from tests.test_launch_everything import retarget
    from tests.test_reliability import (
        KILL_POINTS,
        flow_run_states,
        kill_and_rerun,
        launch_against,
        launch_env,
        tally,
        write_launch_file,
    )
    from tminus.errors import LaunchIncomplete
    from tminus.flows.launch import launch
    from tminus.integrations.files import default_playbook_path, load_launch_file
    from tminus_sandbox.app import ThreadedServer, create_sandbox, free_port

    python = platform.python_version()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {python}")
    sandbox_app = create_sandbox(None)
    with (
        TemporaryDirectory() as tmp,
        ThreadedServer(sandbox_app.app) as server,
        prefect_test_harness(server_startup_timeout=60),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        from prefect.settings import PREFECT_API_URL

        api = str(PREFECT_API_URL.value())
        sandbox = SandboxClient(server.url, sandbox_app)
        sandbox_app.slack.rate_limit = None
        playbook = Path(tmp) / "playbook.yaml"
        data = yaml.safe_load(default_playbook_path().read_text())
        data["approval_tiers"] = []  # a benchmark cannot click Resume
        playbook.write_text(yaml.safe_dump(data))
        env = {**sandbox_env(server.url), "TMINUS_PLAYBOOK": str(playbook)}
        env.pop("TMINUS_RETRY_BACKOFF")  # production retry settings
        os.environ.update(env)

        # 1. faults on every service at once
        examples = [load_launch_file(ROOT / "examples" / f"l{n}.yaml") for n in (1, 2, 3)]
        requests = []
        for i in range(args.launches):
            base = retarget(examples[i % 3], server.url)
            requests.append(base.model_copy(update={"slug": f"{base.slug}-{i}"}))
        share = args.faults / 3
        sandbox.reset()
        sandbox.faults(
            error_rate=share, rate_limit_rate=share, after_write_error_rate=share, retry_after=1
        )
        times, maybe_sent, other_failed = [], 0, 0
        for request in requests:
            started = time.perf_counter()
            try:
                result = launch(request=request)
            except LaunchIncomplete as exc:
                result = exc.report
            times.append(time.perf_counter() - started)
            for row in result.rows():
                if row["outcome"] == "failed" and row["kind"] != "page":
                    if row["kind"] == "sales" and "may or may not" in row["detail"]:
                        maybe_sent += 1
                    else:
                        other_failed += 1
        log = sandbox.requests()
        faults = Counter(r["fault"] for r in log if r["fault"])
        sandbox.faults()
        counts = tally(sandbox, requests, playbook)
        print(
            f"\n{args.launches} launches, {args.faults:.0%} of {len(log)} requests failing "
            f"({dict(faults)}):"
        )
        print(f"  run time: median {statistics.median(times):.1f} s, max {max(times):.1f} s")
        print(f"  {counts}")
        print(f"  Slack answers lost and surfaced as 'maybe sent': {maybe_sent}")
        print(f"  other failed actions: {other_failed}")
        sandbox.clear_log()
        for request in requests:
            with contextlib.suppress(LaunchIncomplete):
                launch(request=request)
        rewrites = [w for w in sandbox.writes() if "/notes" not in w["path"]]
        print(
            f"  re-run without faults: {len(rewrites)} writes besides sales notes; "
            f"{tally(sandbox, requests, playbook)}"
        )

        # 2. kill -9 at four points, then a re-run
        print(f"\nkill -9 at {len(KILL_POINTS)} points x {args.kills}, then re-run:")
        base = retarget(examples[1], server.url)
        for point in KILL_POINTS:
            for k in range(args.kills):
                sandbox.reset()
                request = base.model_copy(update={"slug": f"{base.slug}-kill"})
                launch_file = write_launch_file(request, Path(tmp) / "launch.yaml")
                run_env = launch_env(sandbox, playbook, Path(tmp) / "home", api)
                run_env.pop("TMINUS_RETRY_BACKOFF", None)
                crashed = flow_run_states()["CRASHED"]
                rerun = kill_and_rerun(sandbox, run_env, launch_file, point)
                counts = tally(sandbox, [request], playbook)
                states = flow_run_states()
                print(
                    f"  {point} #{k + 1}: re-run's first request after "
                    f"{rerun['first_request']:.1f} s, exit {rerun['returncode']}, "
                    f"done in {rerun['took']:.1f} s; {counts}; killed run crashed: "
                    f"{states['CRASHED'] - crashed}, running: {states['RUNNING']}"
                )

        # 3. GitLab unreachable
        if args.skip_unreachable:
            return
        print("\nGitLab unreachable (production retry settings):")
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(64)  # accepts connections, never answers
            for name, url in (
                ("connection refused", f"http://127.0.0.1:{free_port()}"),
                ("never answers", f"http://127.0.0.1:{silent.getsockname()[1]}"),
            ):
                took, proc = launch_against(url, sandbox, Path(tmp) / "home", api)
                named = "GitLab" in proc.stdout + proc.stderr
                print(
                    f"  {name}: failed after {took:.1f} s, exit {proc.returncode}, "
                    f"names GitLab: {named}"
                )


if __name__ == "__main__":
    main()
