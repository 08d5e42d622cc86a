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
import ctypes
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
from tminus.deployments.catalogue import AUDIT_ENV  # noqa: E402

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


def mallinfo() -> dict[str, int]:
    """glibc's heap figures (``mallinfo2``, every arena): bytes from the system, in use, free."""

    class Mallinfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            )
        ]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Mallinfo2
    info = libc.mallinfo2()
    return {name: int(getattr(info, name)) for name, _ in Mallinfo2._fields_}


def mappings_kb() -> dict[str, list[int]]:
    """Resident memory (``/proc/self/smaps``) by kind of mapping: [count, KB resident]. Thread
    stacks are the 8 MB anonymous ones, pymalloc's arenas the 1 MB ones, glibc's heaps
    ``[heap]`` and the other anonymous ones."""
    kinds: dict[str, list[int]] = {}
    kind = ""
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                size = (end - start) // 1024
                path = fields[5] if len(fields) > 5 else ""
                if path.startswith("["):
                    kind = path
                elif path:
                    kind = "files"
                elif size in (8192, 8188):
                    kind = f"anon 8 MB (a thread stack's size) {fields[0]}"
                elif size == 1024:
                    kind = "anon 1 MB (pymalloc arenas)"
                else:
                    kind = "anon other"
                kinds.setdefault(kind, [0, 0])[0] += 1
            elif fields[0] == "Rss:":
                kinds[kind][1] += int(fields[1])
    return kinds


def trace_end_of_flow(directory: Path) -> None:
    """With ``--trace DIR``: when the flow publishes its table (its last step, inside the flow
    run) write to ``DIR``, named after the launches audited, the live objects by type (count
    and shallow size), pymalloc's arena figures and the size of Prefect's per-run records; with
    ``AUDIT_SCALE_FRAMES`` > 0 also trace allocations (tracemalloc, that many frames) from the
    flow's start and write a snapshot (slow: 5x the wall time and more)."""
    import pickle
    import threading
    import tracemalloc

    from prefect.context import FlowRunContext

    import tminus.flows.audit as flow_module

    publish = flow_module.create_table_artifact
    frames = int(os.environ.get("AUDIT_SCALE_FRAMES", "0"))

    def traced(*args: Any, **kwargs: Any) -> Any:
        rows = len(kwargs.get("table") or [])
        at_table = memory_kb()
        gc.collect()
        counts: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        for o in gc.get_objects():
            name = type(o).__qualname__
            counts[name] += 1
            sizes[name] += sys.getsizeof(o)
        context = FlowRunContext.get()
        figures: dict[str, Any] = {
            "rss_at_table_kb": at_table["VmRSS"],
            "hwm_at_table_kb": at_table["VmHWM"],
            "run_results": len(context.run_results) if context else None,
            "cancel_events": len(getattr(context.task_runner, "_cancel_events", ()))
            if context
            else None,
            "types": [(n, c, sizes[n]) for n, c in counts.most_common(40)],
        }
        with tempfile.TemporaryFile("w+") as err:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(err.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            err.seek(0)
            figures["pymalloc"] = [
                line.strip() for line in err if line.startswith("#") or "Total" in line
            ]
        figures["mallinfo2"] = mallinfo()
        figures["mappings"] = mappings_kb()
        figures["threads"] = [
            (t.name, t.native_id, t.ident and hex(t.ident)) for t in threading.enumerate()
        ]
        if frames:
            snapshot = tracemalloc.take_snapshot()
            figures["traced_now"], figures["traced_peak"] = tracemalloc.get_traced_memory()
            with (directory / f"snapshot-{rows}.pickle").open("wb") as f:
                pickle.dump(snapshot, f)
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)  # what glibc holds free: resident memory it gives back
        figures["rss_after_malloc_trim_kb"] = memory_kb()["VmRSS"]
        (directory / f"objects-{rows}.json").write_text(json.dumps(figures, indent=1))
        return publish(*args, **kwargs)

    flow_module.create_table_artifact = traced  # type: ignore[assignment]
    if frames:
        tracemalloc.start(frames)


def child() -> None:
    """Run the audit flow once; print its figures as one JSON line."""
    import logging

    from tminus.flows.audit import audit

    logging.getLogger("httpx").setLevel(logging.WARNING)
    samples: list[tuple[float, int]] = []
    if os.environ.get("AUDIT_SCALE_TRACE"):
        import threading

        trace_end_of_flow(Path(os.environ["AUDIT_SCALE_TRACE"]))

        def sample() -> None:  # resident memory every half second, to see where it grows
            from prefect._internal.concurrency.services import _QueueServiceBase

            start = time.perf_counter()
            while True:
                queues: dict[str, int] = {}
                for service in list(_QueueServiceBase._instances.values()):
                    name = type(service).__name__
                    queues[name] = queues.get(name, 0) + service._queue.qsize()
                    client = getattr(service, "_client", None)
                    unconfirmed = getattr(client, "_unconfirmed_events", None)
                    if unconfirmed is not None:
                        queues[f"{name}.unconfirmed"] = len(unconfirmed)
                at = round(time.perf_counter() - start, 1)
                samples.append((at, memory_kb()["VmRSS"], queues))  # type: ignore[arg-type]
                time.sleep(0.5)

        threading.Thread(target=sample, daemon=True).start()
    gc.collect()
    before = memory_kb()["VmRSS"]
    with open("/proc/self/clear_refs", "w") as f:  # VmHWM starts again from VmRSS
        f.write("5")
    started = time.perf_counter()
    rows = audit()
    wall = time.perf_counter() - started
    peak = memory_kb()["VmHWM"]
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    if samples:
        trace = Path(os.environ["AUDIT_SCALE_TRACE"])
        (trace / f"rss-{len(rows)}.json").write_text(json.dumps(samples))
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
    parser.add_argument(
        "--trace",
        type=Path,
        help="write tracemalloc snapshots and live object counts at the flow's end here "
        "(slows the audit; its memory figures then include tracemalloc's own)",
    )
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
                    **dict(AUDIT_ENV),  # the process environment of the audit's deployment
                    **sandbox_env(url),
                    "PREFECT_API_URL": str(PREFECT_API_URL.value()),
                    "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "sandbox")]),
                }
                if args.trace:
                    args.trace.mkdir(parents=True, exist_ok=True)
                    env["AUDIT_SCALE_TRACE"] = str(args.trace.resolve())
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
