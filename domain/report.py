"""Plans and results as markdown, tables and JSON: for Prefect artifacts and the CLI."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from tminus.domain.plan import IssueRole, Plan
from tminus.domain.results import ActionResult, Outcome


def plan_markdown(plan: Plan) -> str:
    """The plan as a markdown document (Prefect artifact and ``tminus plan``)."""
    r = plan.request
    lines = [
        f"# Launch plan: {r.title}",
        "",
        f"- **Launch:** `{r.slug}`, tier **{r.tier.value}** ({r.tier.size}), "
        f"on **{r.launch_date}**",
        f"- **Owner:** @{r.owner} · **Project:** `{r.project}` · **Playbook:** {plan.playbook}"
        f" · **Planned on:** {plan.today}",
    ]
    if r.release_tag:
        lines.append(f"- **Release:** `{r.release_tag}`")
    if plan.warnings:
        lines += ["", "## Warnings", ""]
        lines += [f"- ⚠ {w}" for w in plan.warnings]
    lines += ["", "## Issues", "", "| due | issue | assignee | key |", "|---|---|---|---|"]
    for spec in (plan.tracking, *plan.issues):
        flag = " ⚠ overdue" if spec.overdue else ""
        lines.append(
            f"| {spec.due_date}{flag} | {spec.title} | "
            f"{'@' + spec.assignee if spec.assignee else '—'} | `{spec.key}` |"
        )
    lines += ["", "## Launch calendar", "", "| day | entry | key |", "|---|---|---|"]
    lines += [f"| {c.day} | {c.title} | `{c.key}` |" for c in plan.calendar]
    if plan.checks:
        lines += ["", "## Page checks", "", "| due | check | key |", "|---|---|---|"]
        for check in plan.checks:
            flag = " ⚠ overdue" if check.overdue else ""
            lines.append(f"| {check.due_date}{flag} | {check.title} | `{check.key}` |")
    if plan.notification:
        n = plan.notification
        approval = " (after PMM approval)" if n.needs_approval else ""
        lines += ["", "## Sales notification", "", f"- {n.title}{approval}, due {n.due_date}"]
    return "\n".join(lines) + "\n"


def plan_json(plan: Plan) -> dict[str, Any]:
    return plan.model_dump(mode="json")


def results_rows(results: list[ActionResult]) -> list[dict[str, str]]:
    """Rows of the results table artifact."""
    return [
        {
            "outcome": res.outcome.value,
            "kind": res.kind,
            "title": res.title,
            "link": res.url or "",
            "detail": res.detail,
            "key": res.key,
        }
        for res in results
    ]


def counts(results: list[ActionResult]) -> dict[str, int]:
    c = Counter(res.outcome.value for res in results)
    return {o.value: c.get(o.value, 0) for o in Outcome}


def results_text(results: list[ActionResult]) -> str:
    """Plain text for the terminal: one line per result, failures first."""
    order = {
        Outcome.skipped: 5,
        Outcome.failed: 0,
        Outcome.created: 1,
        Outcome.updated: 2,
        Outcome.closed: 3,
        Outcome.unchanged: 4,
    }
    lines = []
    for res in sorted(results, key=lambda x: order[x.outcome]):
        link = f"  {res.url}" if res.url else ""
        detail = f"  ({res.detail})" if res.detail else ""
        lines.append(f"  {res.outcome.value:<9} {res.kind:<9} {res.title}{link}{detail}")
    return "\n".join(lines)


@dataclass(frozen=True)
class LaunchReport:
    """What a launch run did (or, in a dry run, would do): the launch flow's return value."""

    launch: str
    dry_run: bool
    results: tuple[ActionResult, ...]
    warnings: tuple[str, ...] = ()

    @property
    def tracking(self) -> ActionResult | None:
        return next((r for r in self.results if r.kind == IssueRole.tracking.value), None)

    @property
    def tracking_url(self) -> str | None:
        return self.tracking.url if self.tracking else None

    @property
    def counts(self) -> dict[str, int]:
        return counts(list(self.results))

    @property
    def failed(self) -> list[ActionResult]:
        """Failed rows that fail the launch. A failing page lowers readiness and shows in the
        results; it does not fail the launch."""
        return [r for r in self.results if r.outcome is Outcome.failed and r.kind != "page"]

    def rows(self) -> list[dict[str, str]]:
        return results_rows(list(self.results))
