"""Audit benchmark: the checklist audit over 100, 300 and 1,000 open launches.

    .venv/bin/python benchmarks/audit_scale.py [--launches 100 300 1000] [--seed 7]

Starts the sandbox as ``tminus sandbox`` runs it (``python -m tminus_sandbox``, its own
process, state in SQLite) and a temporary Prefect server (``prefect_test_harness``). For each
size it resets the sandbox and writes that many open launches straight into the GitLab
stand-in's SQLite file, as the launch flow leaves them (faster than running the launches): the
examples' L1, L2 and L3 launches in turn, each with its own slug and a launch day spread over
the 60 days around today, planned by the real planner; every issue carries its key line and
the tracking issue the hidden launch record (``request_marker``) the audit re-plans from;
about a third of the work is closed. Then it runs the audit flow once, in a child process
of its own (``--child``), against the sandbox, and prints per size: wall time of the flow
call, the child's resident memory before the flow and its peak during the flow (Linux's
``VmRSS`` and ``VmHWM``, the peak reset just before the flow; not ``ru_maxrss``, which a
child started by fork and exec inherits from its parent, here the seeding's peak), the
flow's growth being the difference, the requests the stand-ins
received by system and method, and the time the stand-ins spent answering them (their own
request log). Per launch figures show whether the audit grows linearly.
Figures, not assertions. The calendar is left empty, so each launch reports its calendar
entries as out of date, as a launch whose calendar writes failed would.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import exit_on_sigterm, free_port, machine  # noqa: E402
from tests.conftest import sandbox_env as tests_sandbox_env  # noqa: E402

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

PROJECT = "marketing/launches"
EMBEDDED = "http://127.0.0.1:4281"


def sandbox_env(url: str) -> dict[str, str]:
    """The tests' settings for the stand-ins at ``url``, auditing the one project seeded."""
    return {**tests_sandbox_env(url), "TMINUS_AUDIT_PROJECTS": PROJECT}


# --- the launches, written straight into the stand-in ------------------------------------------


def seed(db_path: Path, url: str, count: int, today: date, rng: random.Random) -> int:
    """Write ``count`` open launches into the GitLab stand-in's SQLite file; returns the
    number of issues written."""
    from tminus.domain.issues import compose_description, fill_refs
    from tminus.domain.planner import plan_launch
    from tminus.domain.request import LaunchRequest
    from tminus.integrations.files import load_launch_file, load_playbook
    from tminus_sandbox.gitlab import BOT_USERNAME, GitLabStore

    playbook = load_playbook()
    examples = []
    for name in ("l1", "l2", "l3"):
        data = load_launch_file(ROOT / "examples" / f"{name}.yaml").model_dump(mode="json")
        for feature in data["features"]:
            feature["docs_urls"] = [u.replace(EMBEDDED, url) for u in feature["docs_urls"]]
        if data.get("blog_url"):
            data["blog_url"] = data["blog_url"].replace(EMBEDDED, url)
        examples.append(data)

    store = GitLabStore(db_path)
    project = store.project(PROJECT)
    bot = store.user(BOT_USERNAME, create=True)
    users: dict[str, int] = {}

    def user_id(db: Any, name: str | None) -> list[int]:
        if not name:
            return []
        if name not in users:
            db.execute("INSERT OR IGNORE INTO users (username) VALUES (?)", (name,))
            row = db.execute("SELECT id FROM users WHERE username = ?", (name,)).fetchone()
            users[name] = int(row["id"])
        return [users[name]]

    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    written = 0
    iid = 0
    with store.tx() as db:
        for i in range(count):
            data = dict(examples[i % 3])
            data["slug"] = f"{data['slug']}-{i:04d}"
            data["title"] = f"{data['title']} {i:04d}"
            data["launch_date"] = (today + timedelta(days=rng.randint(-10, 50))).isoformat()
            request = LaunchRequest.model_validate(data)
            plan = plan_launch(request, playbook, today)
            refs: dict[str, int] = {}
            for spec in plan.all_issues:  # the tracking issue last: it refers to the others
                iid += 1
                refs[spec.key] = iid
                is_tracking = spec is plan.tracking
                closed = not is_tracking and rng.random() < 0.35
                labels = list(spec.labels)
                for label in labels:
                    db.execute(
                        "INSERT OR IGNORE INTO labels (project_id, name, color) VALUES (?, ?, ?)",
                        (project["id"], label, "#6699cc"),
                    )
                db.execute(
                    "INSERT INTO issues (project_id, iid, title, description, state, labels, "
                    "due_date, assignee_ids, author_id, created_at, updated_at, closed_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        project["id"],
                        iid,
                        spec.title,
                        compose_description(fill_refs(spec.description, refs), spec.key),
                        "closed" if closed else "opened",
                        json.dumps(labels),
                        spec.due_date.isoformat() if spec.due_date else None,
                        json.dumps(user_id(db, spec.assignee)),
                        bot["id"] if bot else None,
                        now,
                        now,
                        now if closed else None,
                    ),
                )
                written += 1
    return written


# --- the audit, in a process of its own ----------------------------------------------------------


def memory_kb() -> dict[str, int]:
    """This process's resident memory now (``VmRSS``) and at its peak (``VmHWM``), in KB."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith("Vm"))
    return {name: int(value.split()[0]) for name, value in fields.items()}


def child() -> None:
    """Run the audit flow once; print its figures as one JSON line."""
    import logging

    from tminus.flows.audit import audit

    logging.getLogger("httpx").setLevel(logging.WARNING)
    gc.collect()
    before = memory_kb()["VmRSS"]
    with open("/proc/self/clear_refs", "w") as f:  # VmHWM starts again from VmRSS
        f.write("5")
    started = time.perf_counter()
    rows = audit()
    wall = time.perf_counter() - started
    peak = memory_kb()["VmHWM"]
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "wall": wall,
                "rss_before_kb": before,
                "rss_peak_kb": peak,
                "cpu_s": cpu.ru_utime + cpu.ru_stime,
                "rows": len(rows),
                "statuses": Counter(str(r.get("status")) for r in rows),
            }
        )
    )


def system_of(path: str) -> str:
    if path.startswith("/api/v4"):
        return "GitLab"
    if path.startswith("/calendar/v3"):
        return "Calendar"
    if path.startswith(("/docs", "/features")):
        return "pages"
    return "other"


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--seed", type=int, default=7, help="seed of dates and closed issues")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return

    import httpx
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    print(machine())
    today = date.today()
    with tempfile.TemporaryDirectory(prefix="tminus-audit-") as tmp:
        data = Path(tmp) / "sandbox"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        sandbox = subprocess.Popen(
            [sys.executable, "-m", "tminus_sandbox", "--port", str(port), "--data", str(data)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(Path(tmp) / "sandbox.log").open("wb"),
            start_new_session=True,
        )
        try:
            http = httpx.Client(base_url=url, timeout=60)
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the sandbox did not start")
                time.sleep(0.2)
            with prefect_test_harness(server_startup_timeout=60):
                env = {
                    **{k: v for k, v in os.environ.items() if not k.startswith("TMINUS_")},
                    **sandbox_env(url),
                    "PREFECT_API_URL": str(PREFECT_API_URL.value()),
                    "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "sandbox")]),
                }
                print(
                    f"\n{'launches':>8} {'issues':>7} {'wall s':>7} {'ms/launch':>9} "
                    f"{'RSS MB (before -> peak)':>24} {'growth MB':>9} {'requests':>8} "
                    f"{'req/launch':>10} {'stand-in s':>10}  requests by system and method"
                )
                rng = random.Random(args.seed)
                for count in args.launches:
                    http.post("/_sandbox/reset").raise_for_status()
                    issues = seed(data / "gitlab.sqlite3", url, count, today, rng)
                    http.delete("/_sandbox/requests").raise_for_status()
                    proc = subprocess.run(
                        [sys.executable, __file__, "--child"],
                        cwd=ROOT,
                        env=env,
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                    if proc.returncode != 0:
                        raise SystemExit(f"the audit failed:\n{proc.stderr[-4000:]}")
                    figures = json.loads(proc.stdout.strip().splitlines()[-1])
                    log = http.get("/_sandbox/requests").json()
                    by = Counter(f"{system_of(r['path'])} {r['method']}" for r in log)
                    served_s = sum(r.get("ms") or 0 for r in log) / 1000
                    mb = 1024
                    print(
                        f"{count:>8} {issues:>7} {figures['wall']:>7.1f} "
                        f"{figures['wall'] / count * 1000:>9.0f} "
                        f"{figures['rss_before_kb'] / mb:>11.0f} -> "
                        f"{figures['rss_peak_kb'] / mb:<9.0f} "
                        f"{(figures['rss_peak_kb'] - figures['rss_before_kb']) / mb:>+9.1f} "
                        f"{len(log):>8} "
                        f"{len(log) / count:>10.1f} {served_s:>10.1f}  "
                        + ", ".join(f"{k} {n}" for k, n in sorted(by.items()))
                    )
                    if figures["rows"] != count:
                        print(f"  ! {figures['rows']} rows for {count} launches")
                    print(f"  statuses: {figures['statuses']}, child CPU {figures['cpu_s']:.0f} s")
        finally:
            os.killpg(sandbox.pid, signal.SIGTERM)
            sandbox.wait(timeout=30)


if __name__ == "__main__":
    main()
