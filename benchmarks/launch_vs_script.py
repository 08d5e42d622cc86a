"""Launch speed and API cost: tminus vs a plain sequential script vs the critical-path bound.

Every stand-in request is delayed by the same latency.

    PYTHONPATH=.:sandbox .venv/bin/python benchmarks/launch_vs_script.py \
        [--latency-ms 50] [--features 5 20] [--runs 3] [--prefect-db sqlite|postgres]

Starts the stand-ins in-process and a temporary Prefect server (as benchmarks/launch.py does:
Prefect's test server, on a temporary SQLite file; with ``--prefect-db postgres``,
``prefect server start`` on a throwaway PostgreSQL cluster on 127.0.0.1, both started as
tests/postgres.py starts them for the end-to-end test) and, for the L1 example grown to each
number of priority features (the extra features are copies of the example's with their own
names and docs URLs), prints:

- speed at ``--latency-ms`` per request (GitLab, Calendar, Slack, pages alike): the wall time
  of tminus's launch flow (first run on empty stand-ins, median of ``--runs``; the playbook
  without the approval gate), of the same calls made one after another by a plain script
  (benchmarks/sequential_launch.py, same clients), and the critical-path bound computed from
  the plan (the formula is printed); the two ratios;
- Prefect's overhead: the same runs at 0 ms latency, the number of task runs, the cost of one
  task run measured alone (a flow of no-op tasks with the options tminus's tasks use), and how
  long one Prefect write takes right after a burst of task runs; where a first run's time went
  (before, during and after its requests);
- API cost: requests per launch by service, kind and method, first run and unchanged re-run,
  next to the plan's minimum; re-run writes (must be 0).

Figures, not assertions: nothing here fails when a goal is missed.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from benchmarks.common import exit_on_sigterm, machine  # noqa: E402

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

TODAY = date(2026, 11, 22)  # the tests' day: every L1 activity of the example is still ahead
WRITES = ("POST", "PUT", "PATCH", "DELETE")
PAGES_PER_HOST = 2  # HttpPageReader's per-host bound; every stand-in page is on one host
CALENDAR_CONCURRENCY = 1  # CalendarAdapter serialises calls (httplib2 is not thread-safe)


# --- the launch files ---------------------------------------------------------------------


def grown_request(base: dict[str, Any], features: int, url: str) -> Any:
    """The L1 example with ``features`` priority features, every URL on the stand-ins."""
    from tminus.domain.request import LaunchRequest

    raw = copy.deepcopy(base)
    originals = raw["features"]
    grown = []
    for i in range(features):
        feature = copy.deepcopy(originals[i % len(originals)])
        if i >= len(originals):
            feature["name"] = f"{feature['name']} {i + 1}"
            feature["features_page_title"] = f"{feature.get('features_page_title', 'F')} {i + 1}"
            feature["docs_urls"] = [f"{url}/docs/feature-{i + 1}"]
        feature["docs_urls"] = [
            re.sub(r"^http://127\.0\.0\.1:4281", url, u) for u in feature["docs_urls"]
        ]
        grown.append(feature)
    raw["features"] = grown
    raw["blog_url"] = re.sub(r"^http://127\.0\.0\.1:4281", url, raw.get("blog_url", ""))
    return LaunchRequest.model_validate(raw)


# --- what the stand-ins saw ---------------------------------------------------------------

_ISSUE_SUB = re.compile(r"/issues/\d+/(links|notes)")


def kind_of(path: str) -> tuple[str, str]:
    """(service, kind) of a stand-in request path."""
    if path == "/api/graphql":
        return "GitLab", "blockers"  # the open blockers of issues, by GraphQL
    if path.startswith("/api/v4/"):
        if path.startswith("/api/v4/users"):
            return "GitLab", "users"
        if m := _ISSUE_SUB.search(path):
            return "GitLab", m.group(1)
        if "/labels" in path:
            return "GitLab", "labels"
        if "/issues" in path:
            return "GitLab", "issues"
        return "GitLab", "projects"
    if path.startswith("/calendar/"):
        return "Calendar", "events"
    if path.startswith("/slack/"):
        return "Slack", "messages"
    return "pages", "pages"


def cost(rows: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    """Requests by (service, kind, method); a GraphQL query (a POST that only reads) is QUERY."""
    return Counter(
        (*kind_of(r["path"]), "QUERY" if r["path"] == "/api/graphql" else r["method"]) for r in rows
    )


# --- the plan's minimum and the critical path -----------------------------------------------


@dataclass
class Shape:
    """The numbers of things a first run of a plan creates and reads."""

    people: int  # owner + team: one users lookup each (GitLab looks users up one at a time)
    unassigned: int  # of them, those no issue of the launch is assigned to (a re-run looks
    # up only these: the others are known from their issues)
    labels: int  # labels the launch uses (all missing in an empty project)
    rounds: list[int]  # issues per round: dependency levels, then the retrospective
    blocks: int  # blocking links: each issue to the issues it waits for
    waiting: int  # issues that wait for others (a re-run reads their blocking links)
    events: int  # calendar entries
    pages: int  # pages the checks read
    sales: bool  # the tier tells sales

    @property
    def issues(self) -> int:  # activity, sister and retrospective issues, not the tracking one
        return sum(self.rounds)

    @classmethod
    def of(cls, plan: Any, features_url: str, compare_url: str) -> Shape:
        from tminus.domain.pages import page_targets
        from tminus.domain.plan import LATE_WORK
        from tminus.tasks.issues import dependency_levels

        request = plan.request
        keys = {spec.key for spec in plan.issues}
        later = [spec for spec in plan.issues if LATE_WORK in spec.description]
        first = tuple(spec for spec in plan.issues if spec not in later)
        waiting = [spec for spec in plan.issues if spec.depends_on]
        named = {request.owner, *request.team.values()}
        return cls(
            people=len(named),
            unassigned=len(named - {spec.assignee for spec in (*plan.issues, plan.tracking)}),
            labels=len(plan.labels()),
            rounds=[len(level) for level in dependency_levels(first)] + [len(later)] * bool(later),
            blocks=sum(len(set(spec.depends_on) & keys) for spec in waiting),
            waiting=len(waiting),
            events=len(plan.calendar),
            pages=len(page_targets(plan, features_url, compare_url)),
            sales=plan.notification is not None,
        )

    def minimum(self, first: bool) -> Counter[tuple[str, str, str]]:
        """The fewest requests a run can make: a constant number of reads per resource kind,
        one per person a first run names (GitLab's users API takes one username; a re-run
        knows the people it assigned from their issues), the creates a first run needs, no
        write on a re-run."""
        m: Counter[tuple[str, str, str]] = Counter()
        m["GitLab", "projects", "GET"] = 1
        m["GitLab", "users", "GET"] = self.people if first else self.unassigned
        m["GitLab", "issues", "GET"] = 2  # by launch label, and by key (labels can be removed)
        m["GitLab", "labels", "GET"] = 1
        if not first:  # issues this run just created have no links to read
            m["GitLab", "links", "GET"] = 1  # the tracking issue's
            if self.waiting:  # the open blockers of every waiting issue, a page per query
                from tminus.integrations.gitlab import BLOCKERS_PER_QUERY as per_query

                m["GitLab", "blockers", "QUERY"] = math.ceil(self.waiting / per_query)
        m["Calendar", "events", "GET"] = 1
        m["pages", "pages", "GET"] = self.pages
        if self.sales:
            m["GitLab", "notes", "GET"] = 1
        if first:
            m["GitLab", "labels", "POST"] = self.labels
            m["GitLab", "issues", "POST"] = self.issues + 1
            m["GitLab", "links", "POST"] = self.issues + self.blocks
            m["Calendar", "events", "POST"] = self.events
            if self.sales:
                # The sister issues' answers are read again as the message goes out (two
                # listings, as above): the kit carries the latest answers.
                m["GitLab", "issues", "GET"] += 2
                m["GitLab", "notes", "POST"] = 1  # the intent, before the message
                m["Slack", "messages", "POST"] = 1
                m["GitLab", "notes", "PUT"] = 1  # the record, after Slack said ok
        return m

    def critical_path(self, c: int) -> tuple[int, list[str]]:
        """Rounds of requests on the longest chain of dependent calls, at GitLab concurrency
        ``c``, and how they add up."""
        # The project, the issues (by label and by key) and the labels at once; then the
        # people not known from the launch's issues (on a first run, all of them).
        reads = 1 + 2 + 1
        r_read = math.ceil(reads / c) + math.ceil(self.people / c)
        r_labels = math.ceil(self.labels / c)
        # An issue that waits for others names them (#12): each dependency level is a round.
        r_issues = [math.ceil(n / c) for n in self.rounds]
        r_links = math.ceil(self.issues / c)  # a new tracking issue: no links to read first
        r_blocks = math.ceil(self.blocks / c)  # after the tracking issue's links
        # The note list and the answers are read at once -> intent note -> Slack -> record.
        r_sales = 4 if self.sales else 0
        tail = r_links + r_blocks
        gitlab = r_read + r_labels + sum(r_issues) + 1 + max(tail, r_sales)
        calendar = r_read + math.ceil(self.events / CALENDAR_CONCURRENCY)  # after the check
        pages = math.ceil(self.pages / PAGES_PER_HOST)
        rounds = " + ".join(f"ceil({n}/{c})" for n in self.rounds)
        lines = [
            f"GitLab chain: ceil({reads} reads/{c}) + ceil({self.people} people/{c}) + "
            f"ceil({self.labels} labels/{c}) + issues "
            f"by dependency round, retrospective last ({rounds}) + 1 tracking + "
            f"max(ceil({self.issues} links/{c}) + ceil({self.blocks} blocking links/{c}), "
            f"{r_sales} sales) = {r_read} + {r_labels} + {sum(r_issues)} + 1 + "
            f"max({r_links} + {r_blocks}, {r_sales}) = {gitlab} rounds",
            f"Calendar chain: {r_read} (the check) + {self.events} inserts, one at a time "
            f"= {calendar} rounds",
            f"pages: ceil({self.pages} pages/{PAGES_PER_HOST} per host) = {pages} rounds",
        ]
        return max(gitlab, calendar, pages), lines


# --- Prefect's own cost ---------------------------------------------------------------------


def task_run_overhead(n: int = 40) -> tuple[float, float, float]:
    """(s per flow run with no task, s per task run called one after another, s per task run
    when ``n`` are submitted at once), for no-op tasks with the options of tminus's tasks and
    its flow's task runner. Task runs are timed inside the flow; medians of 5."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    @task(name="noop", cache_policy=NO_CACHE)
    def noop(i: int) -> int:
        return i

    @flow(name="overhead", task_runner=ThreadPoolTaskRunner(max_workers=8))  # type: ignore[arg-type]
    def tasks(k: int, together: bool) -> float:
        t0 = time.perf_counter()
        if together:
            for f in [noop.submit(i) for i in range(k)]:
                f.result()
        else:
            for i in range(k):
                noop.submit(i).result()
        return time.perf_counter() - t0

    def whole(k: int) -> float:
        t0 = time.perf_counter()
        tasks(k, False)
        return time.perf_counter() - t0

    tasks(2, False)  # warm up
    empty = statistics.median(whole(0) for _ in range(5))
    one_by_one = statistics.median(tasks(n, False) for _ in range(5)) / n
    together = statistics.median(tasks(n, True) for _ in range(5)) / n
    return empty, one_by_one, together


def write_after_tasks(k: int = 7) -> tuple[float, float]:
    """Seconds one Prefect write (a Variable, as the launch lock writes) takes right after a
    flow's ``k`` task runs, and with no task run before it; medians of 3. On a SQLite server
    the write waits while the server records the task runs' events."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.variables import Variable

    @task(name="noop-before-write", cache_policy=NO_CACHE)
    def noop(i: int) -> int:
        return i

    @flow(name="write-after-tasks")
    def write(n: int) -> float:
        for f in [noop.submit(i) for i in range(n)]:
            f.result()
        t0 = time.perf_counter()
        Variable.set("tminus-bench-write", {"n": n}, overwrite=True)
        return time.perf_counter() - t0

    write(0)  # warm up
    after = statistics.median(write(k) for _ in range(3))
    alone = statistics.median(write(0) for _ in range(3))
    return after, alone


def task_runs_of(flow_run_id: Any) -> int:
    """Task runs Prefect recorded for a flow run (they arrive as events: wait until stable)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    last, stable = -1, 0
    with get_client(sync_client=True) as client:
        for _ in range(40):
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                limit=200,
            )
            stable = stable + 1 if len(runs) == last else 0
            last = len(runs)
            if stable >= 3:
                break
            time.sleep(0.25)
    return last


# --- the Prefect server -------------------------------------------------------------------


@contextmanager
def prefect_server(db: str) -> Iterator[str]:
    """A temporary Prefect server on 127.0.0.1 for this process; yields a description of it.
    ``sqlite``: Prefect's test server (prefect_test_harness) on a temporary SQLite file.
    ``postgres``: ``prefect server start`` on a throwaway PostgreSQL cluster, both started as
    the end-to-end test starts them (tests/postgres.py): the production layout's server.

    Like prefect_test_harness, the API URL is made process-global, not only context-local:
    the launch lock's beat thread starts with an empty context, and would otherwise reach a
    Prefect ephemeral server of its own, which knows nothing of the lock's lease (410: the
    launch then stops with LockLost)."""
    from prefect.testing.utilities import prefect_test_harness

    if db == "sqlite":
        with prefect_test_harness(server_startup_timeout=60):
            yield "Prefect's test server on a temporary SQLite file"
        return

    from prefect.context import _temporary_global_settings_context, get_settings_context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.postgres import postgres_bin, postgres_cluster
    from tests.postgres import prefect_server as prefect_server_on

    bin_dir = postgres_bin()
    if bin_dir is None:
        raise SystemExit(
            "--prefect-db postgres needs PostgreSQL's initdb, pg_ctl and createdb (Debian: "
            "apt-get install postgresql)"
        )
    version = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="tminus-bench-prefect-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TMINUS_"))}
        env.update(PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false")
        with (
            postgres_cluster(bin_dir) as url,
            prefect_server_on(url, env, Path(home) / "server.log") as api,
            temporary_settings({PREFECT_API_URL: api}),
            _temporary_global_settings_context(get_settings_context()),
        ):
            yield (
                f"`prefect server start` on a throwaway PostgreSQL cluster ({version}; fsync "
                "and synchronous_commit off)"
            )


# --- the benchmark ------------------------------------------------------------------------


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Run from the repository root with PYTHONPATH=.:sandbox.",
    )
    parser.add_argument("--latency-ms", type=int, default=50, help="delay per stand-in request")
    parser.add_argument(
        "--features", type=int, nargs="+", default=[5, 20], help="priority features (1-20)"
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs per measurement")
    parser.add_argument(
        "--prefect-db",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the Prefect server's database: a temporary SQLite file, or a throwaway "
        "PostgreSQL cluster on 127.0.0.1 (needs PostgreSQL's server programs)",
    )
    args = parser.parse_args()

    import httpx
    import yaml
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from sequential_launch import run_script

    from tminus.domain.planner import plan_launch
    from tminus.flows.launch import launch
    from tminus.integrations.files import default_playbook_path, load_playbook
    from tminus.settings import load_settings
    from tminus_sandbox.app import ThreadedServer, create_sandbox

    print(machine())
    sandbox = create_sandbox(None)
    with (
        ThreadedServer(sandbox.app) as server,
        prefect_server(args.prefect_db) as server_kind,
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        print(f"Prefect server: {server_kind}")
        url = server.url
        features_url, compare_url = f"{url}/features", f"{url}/features/compare"
        os.environ.update(
            TMINUS_GITLAB_URL=url,
            TMINUS_GITLAB_TOKEN="bench",
            TMINUS_GCAL_ENDPOINT=f"{url}/calendar/v3/",
            TMINUS_SLACK_WEBHOOK_URL=f"{url}/slack/webhook/sales",
            TMINUS_FEATURES_URL=features_url,
            TMINUS_FEATURES_COMPARE_URL=compare_url,
            TMINUS_PAGES_ALLOWED_HOSTS=url.split("://", 1)[1],
            TMINUS_PAGES_ALLOW_PRIVATE="true",
            TMINUS_TIMEZONE="UTC",
        )
        sandbox.slack.rate_limit = None
        playbook_file = Path(os.environ.get("TMPDIR", "/tmp")) / "tminus-bench-no-approval.yaml"
        data = yaml.safe_load(default_playbook_path().read_text())
        data["approval_tiers"] = []  # a benchmark cannot click Resume (tests: no_approval_playbook)
        playbook_file.write_text(yaml.safe_dump(data))
        os.environ["TMINUS_PLAYBOOK"] = str(playbook_file)
        settings = load_settings()
        c = settings.gitlab_concurrency
        http = httpx.Client(base_url=url, timeout=30)
        base = yaml.safe_load((ROOT / "examples" / "l1.yaml").read_text())
        playbook = load_playbook(playbook_file)

        def fresh(latency: int) -> None:
            http.post("/_sandbox/reset").raise_for_status()
            http.put("/_sandbox/faults", json={"latency_ms": latency}).raise_for_status()

        def log() -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = http.get("/_sandbox/requests").json()
            http.delete("/_sandbox/requests").raise_for_status()
            return rows

        last_run: dict[str, float] = {}

        def tminus(request: Any) -> tuple[float, Any]:
            last_run["start"] = time.time()  # the stand-ins log epoch seconds
            t0 = time.perf_counter()
            state = launch(request=request, return_state=True)
            took = time.perf_counter() - t0
            last_run["end"] = last_run["start"] + took
            if not state.is_completed():
                print(f"  (the launch ended {state.name}: {state.message})")
            return took, state.state_details.flow_run_id

        def script(plan: Any) -> float:
            t0 = time.perf_counter()
            run_script(
                plan,
                gitlab_url=url,
                gitlab_token="bench",
                calendar_endpoint=f"{url}/calendar/v3/",
                calendar_id=settings.calendar_id,
                slack_url=f"{url}/slack/webhook/sales",
                features_url=features_url,
                compare_url=compare_url,
            )
            return time.perf_counter() - t0

        def median_of(fn: Callable[[], float]) -> tuple[float, list[float]]:
            times = [fn() for _ in range(args.runs)]
            return statistics.median(times), times

        # Warm up: imports, the Prefect server's first answers, the clients.
        fresh(0)
        warm = grown_request(base, 2, url)
        launch(request=warm)
        script(plan_launch(warm.model_copy(update={"slug": "warm-script"}), playbook, TODAY))

        empty_flow, per_task_seq, per_task_par = task_run_overhead()
        print(
            f"Prefect alone (no-op tasks, tminus's task options): a flow run with no task "
            f"{empty_flow * 1000:.0f} ms; one task run {per_task_seq * 1000:.1f} ms called one "
            f"after another, {per_task_par * 1000:.1f} ms each when 40 are submitted at once"
        )
        after, alone = write_after_tasks()
        print(
            f"a Prefect write (Variable.set) right after 7 task runs took {after:.2f} s, with no "
            f"task run before it {alone:.2f} s (medians of 3; the server records task runs' "
            "events in the background)"
        )
        print(f"GitLab concurrency {c} (TMINUS_GITLAB_CONCURRENCY); runs per figure {args.runs}")

        def measure(
            request: Any, plan: Any, latency: int
        ) -> tuple[dict[str, float], dict[str, Any], int]:
            """Times (median of --runs) and request logs of tminus's first run, its unchanged
            re-run and the script at ``latency``; and the re-run's task runs."""

            def first_run() -> float:
                fresh(latency)
                return tminus(request)[0]

            def script_run() -> float:
                fresh(latency)
                return script(plan)

            logs: dict[str, Any] = {}
            t_first, logs["first_times"] = median_of(first_run)
            logs["first"] = log()  # a reset clears the log: the last first run only
            logs["first_run"] = dict(last_run)
            # The last first run's state is in the stand-ins: re-run it unchanged.
            t_rerun, _ = median_of(lambda: tminus(request)[0])
            logs["rerun"] = log()  # every re-run
            _, run_id = tminus(request)
            log()
            task_runs = task_runs_of(run_id)
            t_script, logs["script_times"] = median_of(script_run)
            logs["script"] = log()  # the last script run only
            return {"first": t_first, "rerun": t_rerun, "script": t_script}, logs, task_runs

        for n in args.features:
            request = grown_request(base, n, url)
            plan = plan_launch(request, playbook, TODAY)
            shape = Shape.of(plan, features_url, compare_url)
            rounds, formula = shape.critical_path(c)
            print(
                f"\n== L1 with {n} priority features: {len(plan.all_issues)} issues, "
                f"{shape.labels} labels, {shape.events} calendar entries, {shape.pages} pages, "
                f"{shape.people} people =="
            )
            figures: dict[int, dict[str, float]] = {}
            for latency in (args.latency_ms, 0):
                figures[latency], measured, task_runs = measure(request, plan, latency)
                if latency == args.latency_ms:
                    logs = measured
                    spread = (
                        f"tminus {min(logs['first_times']):.2f}-{max(logs['first_times']):.2f}"
                        f" s, script {min(logs['script_times']):.2f}-"
                        f"{max(logs['script_times']):.2f} s"
                    )
            rerun_tasks = task_runs
            fresh(0)
            _, run_id = tminus(request)
            first_tasks = task_runs_of(run_id)

            delay = args.latency_ms / 1000
            f, z = figures[args.latency_ms], figures[0]
            bound = rounds * delay
            served = [r["ms"] / 1000 for r in logs["first"]]
            per_request = statistics.median(served) if served else delay
            print(f"at {args.latency_ms} ms per request (medians; range {spread}):")
            print(
                f"  tminus, first run          {f['first']:6.2f} s   (each run: "
                + ", ".join(f"{t:.2f}" for t in logs["first_times"])
                + ")"
            )
            print(f"  tminus, unchanged re-run   {f['rerun']:6.2f} s")
            print(
                f"  (a) sequential script      {f['script']:6.2f} s   tminus is "
                f"{f['script'] / f['first']:.1f}x faster"
            )
            print(
                f"  (b) critical-path bound    {bound:6.2f} s   tminus is "
                f"{f['first'] - bound:+.2f} s from it ({f['first'] / bound:.2f}x)"
            )
            print(f"      {rounds} rounds x {args.latency_ms} ms; longest of:")
            for line in formula:
                print(f"        {line}")
            print(
                f"      the stand-ins took {per_request * 1000:.0f} ms per request (median), "
                f"so the same rounds take {rounds * per_request:.2f} s as served"
            )
            rows, run = logs["first"], logs["first_run"]
            if rows:
                begin = min(r["start"] for r in rows) - run["start"]
                finish = max(r["start"] + r["ms"] / 1000 for r in rows) - run["start"]
                took = run["end"] - run["start"]
                print(
                    f"      where the last first run ({took:.2f} s) went: {begin:.2f} s before "
                    f"its first request (plan, lock), {finish - begin:.2f} s of requests, "
                    f"{took - finish:.2f} s after its last (lock release, results, run end)"
                )
            print("at 0 ms (what is left is CPU: tminus, Prefect, the clients, the stand-ins):")
            print(
                f"  tminus first run {z['first']:.2f} s ({first_tasks} task runs), re-run "
                f"{z['rerun']:.2f} s ({rerun_tasks} task runs); script {z['script']:.2f} s"
            )
            print(
                f"  tminus minus script: {z['first'] - z['script']:+.2f} s, "
                f"{(z['first'] - z['script']) / max(first_tasks, 1) * 1000:+.1f} ms per task run"
            )

            print(
                "API cost: requests per launch (first run | re-run | plan's minimum first run "
                "| re-run)"
            )
            first_cost, script_cost = cost(logs["first"]), cost(logs["script"])
            rerun_cost = cost(logs["rerun"])
            runs = args.runs
            want_first, want_rerun = shape.minimum(True), shape.minimum(False)
            keys = sorted(set(first_cost) | set(rerun_cost) | set(want_first))
            for key in keys:
                got1, got2 = first_cost[key], rerun_cost[key] / runs
                above = got1 > want_first[key] or got2 > want_rerun[key]
                mark = "  <- above the minimum" if above else ""
                print(
                    f"  {key[0]:<9}{key[1]:<9}{key[2]:<6} {got1:5.0f} | {got2:5.0f} | "
                    f"{want_first[key]:5d} | {want_rerun[key]:5d}{mark}"
                )
            total1 = sum(first_cost.values())
            total2 = sum(rerun_cost.values()) / runs
            writes2 = sum(v for k, v in rerun_cost.items() if k[2] in WRITES) / runs
            print(
                f"  total {total1:.0f} | {total2:.0f} | {sum(want_first.values())} | "
                f"{sum(want_rerun.values())};  re-run writes: {writes2:.0f};  "
                f"the script made {sum(script_cost.values())} requests"
            )
            differ = {
                k: (first_cost[k], script_cost[k])
                for k in set(first_cost) | set(script_cost)
                if first_cost[k] != script_cost[k]
            }
            if differ:
                print(f"  tminus vs script, where they differ: {differ}")


if __name__ == "__main__":
    main()
