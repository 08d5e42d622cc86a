"""The ``tminus`` command.

Exit codes: 0 done · 1 the launch ran but some actions failed, or ``deployments --check``
found the file out of date · 2 bad input (launch file, playbook, settings) · 3 an external
system refused (GitLab, Prefect).
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tminus.errors import (
    InputError,
    IntegrationError,
    LaunchFileError,
    LaunchIncomplete,
    TminusError,
)
from tminus.settings import Settings, load_settings

EXIT_FAILED_ACTIONS = 1
EXIT_BAD_INPUT = 2
EXIT_INTEGRATION = 3


def _today(settings: Settings, given: str | None) -> date:
    if given:
        try:
            return date.fromisoformat(given)
        except ValueError:
            raise InputError("--today", [f"got {given!r}: write the date as YYYY-MM-DD"]) from None
    return datetime.now(ZoneInfo(settings.timezone)).date()


def _load(path: str, settings: Settings) -> tuple[Any, Any]:
    """Validate the launch file against the schema and the playbook, and plan it once (pure,
    so a template that fails for this launch fails here): no side effects."""
    from tminus.domain.planner import check_request, plan_launch
    from tminus.integrations.files import load_launch_file
    from tminus.integrations.gitlab_repo import team_playbook

    request = load_launch_file(path)
    playbook = team_playbook(settings)
    check_request(request, playbook, source=path)
    plan_launch(request, playbook, _today(settings, None))
    return request, playbook


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    from tminus.domain.planner import plan_launch
    from tminus.domain.report import plan_json, plan_markdown

    request, playbook = _load(args.file, settings)
    plan = plan_launch(request, playbook, _today(settings, args.today))
    if args.json:
        print(json.dumps(plan_json(plan), indent=2))
    else:
        print(plan_markdown(plan))
    return 0


def _use_embedded_prefect(settings: Settings) -> None:
    """Point this process's Prefect client at the embedded server (unless told otherwise)."""
    if "PREFECT_API_URL" in os.environ:
        return
    from tminus.deployments.embedded import prefect_env

    for key, value in prefect_env(settings.home.resolve()).items():
        os.environ.setdefault(key, value)
    os.environ["PREFECT_API_URL"] = f"{settings.prefect_url}/api"


def _start_services(settings: Settings) -> None:
    from tminus.deployments.embedded import up

    needs = "the local Prefect server" + (" and the sandbox" if settings.embedded else "")
    print(f"Starting {needs} (first start takes a few seconds) ...", file=sys.stderr)
    up(settings)
    _use_embedded_prefect(settings)


def _ui_url() -> str:
    return os.environ["PREFECT_API_URL"].removesuffix("/api").removesuffix("/")


def cmd_launch(args: argparse.Namespace, settings: Settings) -> int:
    from tminus.domain.report import results_text

    request, _ = _load(args.file, settings)  # before any side effect, even starting servers
    _start_services(settings)
    from tminus.domain.report import LaunchReport
    from tminus.flows.launch import launch

    state = _run_with_approval(
        lambda: launch(request=request, dry_run=args.dry_run, return_state=True)
    )
    run_id = state.state_details.flow_run_id
    outcome = state.result(raise_on_failure=False)
    run_url = f"{_ui_url()}/runs/flow-run/{run_id}"
    code = 0
    if isinstance(outcome, LaunchIncomplete):
        report, code = outcome.report, EXIT_FAILED_ACTIONS
    elif isinstance(outcome, InputError):
        raise outcome
    elif isinstance(outcome, BaseException):
        print(f"tminus: launch {request.slug} failed: {outcome}", file=sys.stderr)
        print(f"Run: {run_url}", file=sys.stderr)
        return EXIT_INTEGRATION if isinstance(outcome, IntegrationError) else 1
    else:
        report = outcome
    assert isinstance(report, LaunchReport)
    mode = "Dry run of" if args.dry_run else "Launch"
    tally = ", ".join(f"{n} {k}" for k, n in report.counts.items() if n)
    print(f"{mode} {request.slug} ({request.tier.value}, {request.launch_date}): {tally}")
    for warning in report.warnings:
        print(f"  ⚠ {warning}")
    print(results_text(list(report.results)))
    if report.tracking_url:
        print(f"\nTracking issue: {report.tracking_url}")
    print(f"Prefect run:    {run_url}")
    print(f"Prefect UI:     {_ui_url()}")
    if "PREFECT_API_URL" in os.environ and settings.embedded:
        print(f"Sandbox:        {settings.sandbox_url}/_sandbox/requests (request log)")
    print("Local services keep running; `tminus down` stops them.")
    return code


def _run_with_approval(run: Any) -> Any:
    """Run a flow in a worker thread; when it pauses for a PMM's approval, say where to give
    it, and on a terminal also offer to answer here."""
    import threading
    import uuid

    from prefect import tags
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import resume_flow_run

    marker = f"cli-{uuid.uuid4().hex[:12]}"
    box: dict[str, Any] = {}

    def work() -> None:
        with tags(marker):
            try:
                box["state"] = run()
            except BaseException as exc:  # re-raised in the main thread
                box["error"] = exc

    # The flow sees this thread's context (settings given by ``use_settings``, for one).
    thread = threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True)
    thread.start()
    asked: set[Any] = set()
    with get_client(sync_client=True) as client:
        while thread.is_alive():
            thread.join(timeout=1.0)
            if not thread.is_alive():
                break
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[marker]))
            )
            for flow_run in runs:
                if flow_run.state is None or not flow_run.state.is_paused():
                    continue
                if flow_run.id in asked:
                    continue
                asked.add(flow_run.id)
                url = f"{_ui_url()}/runs/flow-run/{flow_run.id}"
                print(
                    f"\n⏸  The sales message waits for a PMM's approval: open {url}, click "
                    "Resume and tick 'approve'.",
                    flush=True,
                )
                if sys.stdin.isatty():
                    answer = input("   Or approve it here: send it to sales now? [y/N] ")
                    approve = answer.strip().lower() in ("y", "yes")
                    try:
                        resume_flow_run(
                            flow_run.id,
                            run_input={"approve": approve, "comment": "answered in the terminal"},
                        )
                    except NotPausedError:
                        print("   Already answered in the UI.", flush=True)
    if "error" in box:
        raise box["error"]
    return box["state"]


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    import subprocess

    from tminus.deployments.embedded import sandbox_argv

    try:
        return subprocess.call(sandbox_argv(settings, args.port))
    except KeyboardInterrupt:
        return 130


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    _start_services(settings)
    return cmd_status(args, settings)


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    from tminus.deployments.embedded import down

    stopped = down(settings)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from tminus.deployments.embedded import status

    for name, (url, ok) in status(settings).items():
        print(f"{name:<8} {url:<28} {'up' if ok else 'down'}")
    return 0


def _webhook_config(settings: Settings) -> Any:
    from tminus.deployments.webhook import WebhookConfig

    return WebhookConfig(
        token=settings.webhook_token,
        prefect_api_url=os.environ["PREFECT_API_URL"],
        db_path=settings.home.resolve() / "webhook" / "outbox.sqlite3",
        # Its merge requests get previews and pushes to its default branch apply launches;
        # unset, merge request and push hooks are ignored.
        launches_projects=frozenset({repo.strip()} if (repo := settings.launches_repo) else ()),
    )


def cmd_webhook(args: argparse.Namespace, settings: Settings) -> int:
    from tminus.deployments.webhook import serve

    _use_embedded_prefect(settings)
    config = _webhook_config(settings)
    config.db_path.parent.mkdir(parents=True, exist_ok=True)
    port = args.port or settings.webhook_port
    host = args.host or settings.webhook_host
    print(
        f"tminus webhook receiver on http://{host}:{port}/hooks/gitlab (events to "
        f"{config.prefect_api_url}); Ctrl-C stops it",
        file=sys.stderr,
    )
    serve(config, host=host, port=port)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from tminus.deployments.embedded import receiver_service, up
    from tminus.deployments.serve import serve_all

    _start_services(settings)
    if not args.no_receiver:
        up(settings, extra=[receiver_service(settings)])
        print(
            f"Webhook URL: http://127.0.0.1:{settings.webhook_port}/hooks/gitlab"
            f"{'' if settings.webhook_token else ' (no TMINUS_WEBHOOK_TOKEN set)'}"
        )
    print(
        f"Prefect UI:  {_ui_url()} (deployments launch, on-release, preview, apply-launches, audit)"
    )
    serve_all(settings)
    return 0


def cmd_deployments(args: argparse.Namespace, settings: Settings) -> int:
    from tminus.deployments.catalogue import prefect_yaml

    text = prefect_yaml()
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
        print(f"Wrote {args.write}", file=sys.stderr)
        return 0
    if args.check:
        try:
            current = Path(args.check).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(args.check, [f"cannot be read: {exc.strerror or exc}"]) from None
        if current != text:
            print(
                f"tminus: {args.check} differs from the deployments in deployments/catalogue.py; "
                f"run `tminus deployments --write {args.check}`",
                file=sys.stderr,
            )
            return 1
        return 0
    sys.stdout.write(text)
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    _start_services(settings)
    from tminus.flows.audit import audit

    rows = audit(projects=args.project or None)
    for row in rows:
        print(
            f"  {row.get('status', '?'):<9} {row.get('readiness', '-'):>3}%  "
            f"{row.get('launch')}  done {row.get('done', '-')}, overdue "
            f"{row.get('overdue', '-')}, reminded {row.get('reminded', 0)}  "
            f"{row.get('tracking_issue', row.get('detail', ''))}"
        )
    if not rows:
        print("No open launches.")
    print(f"Prefect UI: {_ui_url()}")
    return 0


def cmd_calendar_export(args: argparse.Namespace, settings: Settings) -> int:
    from tminus.domain.planner import plan_launch
    from tminus.integrations.ics import launch_calendar_ics

    files = args.files or sorted(
        str(p) for p in (settings.launches_dir or Path("examples")).glob("*.y*ml")
    )
    today = _today(settings, None)
    plans = []
    for path in files:
        request, playbook = _load(path, settings)
        plans.append(plan_launch(request, playbook, today))
    data = launch_calendar_ics(plans, now=datetime.now(ZoneInfo("UTC")))
    if args.output == "-":
        sys.stdout.buffer.write(data)
    else:
        Path(args.output).write_bytes(data)
        events = sum(len(p.calendar) for p in plans)
        print(f"wrote {args.output}: {events} events from {len(plans)} launches")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from tminus.deployments.demo import run_demo

    request, _ = _load(args.file, settings)
    _start_services(settings)
    return run_demo(settings, request, _ui_url())


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    from tminus.deployments.scaffold import scaffold, write_scaffold

    project = args.project or settings.launches_repo or "marketing/launch-plans"
    playbook = Path(args.playbook) if args.playbook else settings.playbook
    written = write_scaffold(
        scaffold(Path(args.folder), project, args.branch, playbook, _today(settings, None))
    )
    print(f"Launches repository scaffolded in {args.folder}:")
    for path in written:
        print(f"  {path}")
    print(
        f"\nPush it to GitLab as {project}, set TMINUS_LAUNCHES_REPO={project} where tminus runs,"
        "\nand add the webhook its README describes."
    )
    return 0


def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    from tminus.domain.planner import check_request
    from tminus.integrations.files import load_launch_file, load_playbook

    # Before any side effect, even starting servers: every file valid for the chosen playbook.
    if args.playbook:
        playbook = load_playbook(args.playbook)
        for path in args.files:
            check_request(load_launch_file(path), playbook, source=path)
    else:
        for path in args.files:
            _load(path, settings)
    _start_services(settings)
    from tminus.flows.preview import preview_files

    state = preview_files(files=list(args.files), playbook=args.playbook, return_state=True)
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, BaseException):
        raise outcome
    print(outcome["markdown"])
    return 0 if outcome["ok"] else EXIT_FAILED_ACTIONS


def _ask_assessment() -> dict[str, Any]:
    """The tier questionnaire in the terminal: y/n per criterion, then the audience."""
    from tminus.domain.tiering import AUDIENCE_QUESTION, QUESTIONS, Audience

    answers: dict[str, Any] = {}
    for name, question in QUESTIONS.items():
        while (said := input(f"{question} [y/n] ").strip().lower()) not in ("y", "n", "yes", "no"):
            print("  answer y or n")
        answers[name] = said.startswith("y")
    choices = "/".join(a.value for a in Audience)
    while (said := input(f"{AUDIENCE_QUESTION} [{choices}] ").strip().lower()) not in {
        a.value for a in Audience
    }:
        print(f"  answer one of {choices}")
    answers["audience"] = said
    return answers


def cmd_tier(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import ValidationError

    from tminus.domain.tiering import TierAssessment, recommend, recommendation_markdown
    from tminus.domain.validation import describe_validation_error
    from tminus.integrations.files import load_playbook, read_yaml_mapping
    from tminus.integrations.gitlab_repo import team_playbook

    chosen, prefix = None, ""
    if args.file:
        data = read_yaml_mapping(Path(args.file), LaunchFileError)
        raw: Any = data
        if "tier_assessment" in data:  # a launch file: its answers, and the tier it chose
            raw, chosen, prefix = data["tier_assessment"], data.get("tier"), "tier_assessment."
        source = args.file
    elif sys.stdin.isatty():
        raw, source = _ask_assessment(), "your answers"
    else:
        raise InputError("tminus tier", ["no terminal to ask in: give a file with the answers"])
    try:
        assessment = TierAssessment.model_validate(raw)
    except ValidationError as exc:
        problems = [prefix + p for p in describe_validation_error(exc)]
        raise LaunchFileError(source, problems) from None
    playbook = load_playbook(args.playbook) if args.playbook else team_playbook(settings)
    rec = recommend(assessment, playbook.tier_recommendation)
    print(recommendation_markdown(rec, assessment))
    if chosen is not None and chosen != rec.tier.value:
        print(f"The file says tier {chosen}: keep it with tier_override (by, why), or change it.")
    return 0


def cmd_playbook(args: argparse.Namespace, settings: Settings) -> int:
    from tminus.domain.request import Tier
    from tminus.integrations.files import load_playbook

    playbook = load_playbook(args.file or settings.playbook)
    print(f"Playbook {playbook.name!r}: {len(playbook.activities)} activities\n")
    tiers = list(Tier)
    print(
        f"{'activity':<24} {'kind':<13} "
        + " ".join(f"{t.value:<9}" for t in tiers)
        + " lead  owner"
    )
    for act in playbook.activities:
        cells = " ".join(f"{(freq.value if (freq := act.tiers.get(t)) else '-'):<9}" for t in tiers)
        print(
            f"{act.key:<24} {act.kind.value:<13} {cells} {act.lead_time_days:>4}  {act.owner_role}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tminus",
        description="Turn a launch tier decision into GitLab issues, run as Prefect flows. "
        "With no TMINUS_GITLAB_URL set, everything runs on local stand-ins.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "plan",
        help="print what a launch file would create (writes nothing; reads only the team's "
        "playbook from TMINUS_LAUNCHES_REPO when that is set)",
    )
    p.add_argument("file", help="launch file (YAML), e.g. examples/l1.yaml")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--today", metavar="YYYY-MM-DD", help="plan as if today were this day")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "launch",
        help="run the launch flow for a launch file (starts the local "
        "Prefect server and sandbox when needed)",
    )
    p.add_argument("file", help="launch file (YAML), e.g. examples/l1.yaml")
    p.add_argument(
        "--dry-run", action="store_true", help="only read GitLab; report what a real run would do"
    )
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser("sandbox", help="run the local stand-ins (GitLab API) in the foreground")
    p.add_argument("--port", type=int, help="port on 127.0.0.1 (default TMINUS_SANDBOX_PORT)")
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser("up", help="start the local Prefect server and sandbox in the background")
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("down", help="stop what `tminus up` started")
    p.set_defaults(func=cmd_down)
    p = sub.add_parser("status", help="show the local services and whether they answer")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "serve",
        help="serve the launch, on-release, recommend-tier, preview, apply-launches and audit "
        "deployments (and "
        "the webhook receiver) until interrupted",
    )
    p.add_argument("--no-receiver", action="store_true", help="do not start the webhook receiver")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "deployments",
        help="print prefect.yaml (for work pools) as generated from the deployments "
        "`tminus serve` serves",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="FILE", help="write it to FILE, e.g. prefect.yaml")
    group.add_argument(
        "--check", metavar="FILE", help="exit 1 if FILE differs from what would be written"
    )
    p.set_defaults(func=cmd_deployments)

    p = sub.add_parser("webhook", help="run the GitLab webhook receiver in the foreground")
    p.add_argument("--port", type=int, help="port on 127.0.0.1 (default TMINUS_WEBHOOK_PORT)")
    p.add_argument("--host", help="address to listen on (default TMINUS_WEBHOOK_HOST, 127.0.0.1)")
    p.set_defaults(func=cmd_webhook)

    p = sub.add_parser("audit", help="run the checklist audit of every open launch once")
    p.add_argument(
        "--project",
        action="append",
        help="GitLab project to audit (repeatable; default TMINUS_AUDIT_PROJECTS)",
    )
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser(
        "demo",
        help="start everything in the background (Prefect, stand-ins, "
        "receiver, deployments) and run the L1 example from its deployment",
    )
    p.add_argument("file", nargs="?", default="examples/l1.yaml", help="launch file")
    p.set_defaults(func=cmd_demo)

    cal = sub.add_parser("calendar", help="the marketing launch calendar")
    cal_sub = cal.add_subparsers(dest="calendar_command", required=True, metavar="COMMAND")
    p = cal_sub.add_parser("export", help="write the launch calendar as iCalendar (RFC 5545)")
    p.add_argument(
        "files", nargs="*", help="launch files (default: TMINUS_LAUNCHES_DIR or examples/)"
    )
    p.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_calendar_export)

    p = sub.add_parser(
        "init", help="scaffold a launches repository (launch files as code) in a new folder"
    )
    p.add_argument("folder", help="folder to create the files in (must not hold them yet)")
    p.add_argument(
        "--project",
        help="the repository's GitLab path (default TMINUS_LAUNCHES_REPO, else "
        "marketing/launch-plans)",
    )
    p.add_argument("--branch", default="main", help="its default branch (default main)")
    p.add_argument(
        "--playbook", help="playbook to copy in (default TMINUS_PLAYBOOK or the packaged one)"
    )
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "preview",
        help="print what running these launch files would change, as a merge request's "
        "preview comment says it (reads only; starts the local services when needed)",
    )
    p.add_argument("files", nargs="+", help="launch files (YAML)")
    p.add_argument("--playbook", help="preview with this playbook (default: the team's)")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser(
        "tier",
        help="recommend a tier: asks the questionnaire in the terminal, or reads the answers "
        "from a file (a launch file's tier_assessment, or the answers alone)",
    )
    p.add_argument("file", nargs="?", help="YAML with the answers (default: ask)")
    p.add_argument("--playbook", help="score with this playbook (default: the team's)")
    p.set_defaults(func=cmd_tier)

    p = sub.add_parser("playbook", help="show (and validate) a playbook's activity matrix")
    p.add_argument(
        "file", nargs="?", help="playbook YAML (default: TMINUS_PLAYBOOK or the packaged default)"
    )
    p.set_defaults(func=cmd_playbook)
    return parser


def _say_error(text: str) -> None:
    """Print to stderr whatever the input held: characters the terminal cannot show are
    escaped rather than failing the print."""
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    print(text.encode(encoding, "backslashreplace").decode(encoding), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        return int(args.func(args, settings))
    except InputError as exc:
        _say_error(f"tminus: {exc}\nNothing was created or changed.")
        return EXIT_BAD_INPUT
    except IntegrationError as exc:
        print(f"tminus: {exc}", file=sys.stderr)
        return EXIT_INTEGRATION
    except TminusError as exc:
        print(f"tminus: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
