"""The launch flow: request -> plan -> reconcile issues -> report.

No ``from __future__ import annotations`` here: with it, a run started from a deployment (UI,
trigger, schedule) fails parameter validation because ``LaunchRequest`` is "not fully defined".
"""

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from integrations.gitlab import build_tracker
from tasks.issues import (
    check_gitlab,
    drop_issue,
    ensure_issue,
    ensure_labels,
    ensure_links,
    find_launch_issues,
)
from tminus.errors import TminusError
from tminus.plan import IssueRole, Plan
from tminus.planner import plan_launch
from tminus.playbook import load_playbook
from tminus.reconcile import ActionResult, IssueTracker, Outcome
from tminus.report import counts, plan_markdown, results_rows
from tminus.request import LaunchRequest
from tminus.settings import load_settings


class LaunchIncomplete(TminusError):
    """Some actions failed; the others were done. Carries every result."""

    def __init__(self, summary: dict[str, Any]) -> None:
        self.summary = summary
        failed = [r for r in summary["results"] if r["outcome"] == Outcome.failed.value]
        lines = "\n".join(f"  - {r['title']}: {r['detail']}" for r in failed)
        super().__init__(f"{len(failed)} of {len(summary['results'])} actions failed:\n{lines}")


def _settled(future: PrefectFuture[ActionResult], key: str, kind: str, title: str) -> ActionResult:
    """A task's result, or a failed row carrying its error."""
    try:
        return future.result()
    except Exception as exc:
        return ActionResult(
            key=key, kind=kind, title=title, outcome=Outcome.failed, detail=str(exc)
        )


def reconcile_issues(
    tracker: IssueTracker, plan: Plan, dry_run: bool = False
) -> list[ActionResult]:
    """Bring GitLab to the plan: labels, activity and sister issues, the tracking issue, links."""
    request = plan.request
    project = request.project
    user_ids = check_gitlab(tracker, plan)
    existing = find_launch_issues(tracker, plan)
    # Labels first, but a label failure is reported, not fatal: GitLab also creates the
    # labels an issue names (without our colors).
    results = [
        _settled(
            ensure_labels.submit(tracker, plan, dry_run),
            f"{request.slug}/labels",
            "labels",
            "Labels",
        )
    ]

    def submit(spec: Any, refs: dict[str, int]) -> PrefectFuture[ActionResult]:
        return ensure_issue.submit(
            tracker,
            project,
            spec,
            existing.get(spec.key),
            user_ids.get(spec.assignee) if spec.assignee else None,
            refs,
            request.launch_label,
            plan.launch_marker,
            dry_run,
        )

    futures = [(spec, submit(spec, {})) for spec in plan.issues]
    refs: dict[str, int] = {}
    for spec, future in futures:
        res = _settled(future, spec.key, spec.role.value, spec.title)
        results.append(res)
        if res.iid is not None:
            refs[spec.key] = res.iid

    tracking = _settled(
        submit(plan.tracking, refs), plan.tracking.key, "tracking", plan.tracking.title
    )
    results.append(tracking)

    planned = {spec.key for spec in plan.all_issues}
    dropped = [s for key, s in existing.items() if key not in planned]
    reason = (
        f"this activity is not part of the {request.tier.value} launch any more "
        f"(playbook {plan.playbook})"
    )
    drops = [(s, drop_issue.submit(tracker, project, s, reason, dry_run)) for s in dropped]
    results += [_settled(f, s.key or "", "dropped", s.title) for s, f in drops]

    if tracking.iid is not None and refs:
        results.append(
            _settled(
                ensure_links.submit(tracker, project, tracking.iid, list(refs.values()), dry_run),
                f"{plan.tracking.key}/links",
                "links",
                "Links to the tracking issue",
            )
        )
    return results


def publish(plan: Plan, results: list[ActionResult], dry_run: bool) -> None:
    slug = plan.request.slug
    prefix = "Dry run: what a real run would do" if dry_run else "Results"
    create_table_artifact(
        key=f"launch-results-{slug}",
        table=results_rows(results),
        description=f"{prefix} for launch {plan.request.title}: {counts(results)}",
    )


@flow(name="launch", task_runner=ThreadPoolTaskRunner(max_workers=8))  # type: ignore[arg-type]
def launch(request: LaunchRequest, dry_run: bool = False) -> dict[str, Any]:
    """Turn a launch decision into its work: plan it from the playbook, then create or update
    the launch tracking issue, one issue per activity of the tier and one sister marketing issue
    per priority feature, in GitLab. Running it again changes only what drifted.

    With `dry_run`, GitLab is only read: the results table says what a real run would do.
    """
    logger = get_run_logger()
    settings = load_settings()
    playbook = load_playbook(settings.playbook)
    today = datetime.now(ZoneInfo(settings.timezone)).date()
    plan = plan_launch(request, playbook, today)
    create_markdown_artifact(
        key=f"launch-plan-{request.slug}",
        markdown=plan_markdown(plan),
        description=f"Plan for launch {request.title}",
    )
    for warning in plan.warnings:
        logger.warning(warning)

    tracker = build_tracker(settings)
    results = reconcile_issues(tracker, plan, dry_run=dry_run)
    publish(plan, results, dry_run)
    tracking = next((r for r in results if r.kind == IssueRole.tracking.value), None)
    summary: dict[str, Any] = {
        "launch": request.slug,
        "dry_run": dry_run,
        "tracking_url": tracking.url if tracking else None,
        "counts": counts(results),
        "results": results_rows(results),
        "warnings": list(plan.warnings),
    }
    logger.info("Launch %s: %s", request.slug, summary["counts"])
    if summary["counts"][Outcome.failed.value]:
        raise LaunchIncomplete(summary)
    return summary
