"""After launch day, the pure part: the late work a retrospective lists, and the success
metrics table whose actuals people fill in.

The retrospective is an ordinary playbook activity with a negative lead time (due at T+7 in
the default playbook, key ``retrospective``). Its description names ``late_work`` and
``metrics_table``: the first is a placeholder filled from what GitLab has whenever the issue is
written (by a launch run or by the audit), the second a table whose last column, "actual", is
left for people; tminus keeps what they write there and the audit reads it back.

Work is late when its issue was closed after its due date (by the days between), or is still
open past its due date on the retrospective's own due date (counted to that day, so the list
changes only when work closes, not every day).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date

from tminus.domain.issues import DROPPED_LABEL, IssueState, split_description, table_cells
from tminus.domain.plan import LATE_WORK, IssueSpec
from tminus.domain.request import LaunchRequest, SuccessMetric

RETROSPECTIVE = "retrospective"  # the activity key the audit keeps after launch day
METRICS_DAYS = 30  # success metrics are reported from launch day + this
_ACTUAL = "actual"


@dataclass(frozen=True)
class Late:
    issue: IssueState
    days: int
    closed_on: date | None  # None: still open


def is_work(issue: IssueState) -> bool:
    """An activity or sister issue that still applies (not the tracking issue, not dropped)."""
    key = issue.key or ""
    return ("/activity/" in key or "/sister/" in key) and DROPPED_LABEL not in issue.labels


def late_work(issues: Iterable[IssueState], day: date, *, skip: str = "") -> list[Late]:
    """The launch's late work as of ``day`` (the retrospective's due date), most late first.
    ``skip`` is the retrospective's own key."""
    late = []
    for issue in issues:
        due = issue.due_date
        if not is_work(issue) or issue.key == skip or due is None:
            continue
        if issue.state == "closed":
            closed = issue.closed_at.date() if issue.closed_at else None
            if closed is not None and closed > due:
                late.append(Late(issue, (closed - due).days, closed))
        elif due < day:
            late.append(Late(issue, (day - due).days, None))
    late.sort(key=lambda item: (-item.days, item.issue.iid))
    return late


def late_work_markdown(issues: Iterable[IssueState], day: date, today: date, skip: str) -> str:
    """What fills the late-work placeholder: a promise before ``day``, the list from then."""
    if today < day:
        return (
            f"_Listed here from GitLab on {day}: every activity closed after its due date, or "
            "still open past it, and by how many days._"
        )
    rows = late_work(issues, day, skip=skip)
    if not rows:
        return "None: every activity was closed by its due date."
    lines = []
    for item in rows:
        issue = item.issue
        days = f"{item.days} day{'s' if item.days != 1 else ''} late"
        if item.closed_on is None:
            done = f"still open ({days} on {day})"
        else:
            done = f"closed {item.closed_on} ({days})"
        lines.append(f"- #{issue.iid} {issue.title}: due {issue.due_date}, {done}")
    return "\n".join(lines)


def as_written(
    specs: Sequence[IssueSpec], observed: Mapping[str, IssueState], iids: Mapping[str, int]
) -> list[IssueState]:
    """The launch's issues as a run leaves them: the observed ones with their planned title
    and due date, plus the ones it created (open; ``iids`` by key). Issues no longer planned
    are left out (the run drops them)."""
    out = []
    for spec in specs:
        seen = observed.get(spec.key)
        if seen is not None:
            out.append(replace(seen, title=spec.title, due_date=spec.due_date))
        elif spec.key in iids:
            iid = iids[spec.key]
            out.append(
                IssueState(
                    iid=iid,
                    web_url="",
                    title=spec.title,
                    description="",
                    labels=spec.labels,
                    due_date=spec.due_date,
                    assignee_ids=(),
                    state="opened",
                    key=spec.key,
                )
            )
    return out


def fill_for(spec: IssueSpec, issues: Iterable[IssueState], today: date) -> str:
    """The late-work text for ``spec`` (empty when its description has no placeholder)."""
    if LATE_WORK not in spec.description:
        return ""
    return late_work_markdown(issues, spec.due_date or today, today, spec.key)


def metrics_table(request: LaunchRequest) -> str:
    """The success metrics as a table with an empty "actual" column for people to fill."""
    if not request.success_metrics:
        return ""
    lines = [f"| metric | target | source | {_ACTUAL} |", "|---|---|---|---|"]
    lines += [f"| {m.name} | {m.target} | {m.source} |  |" for m in request.success_metrics]
    return "\n".join(lines)


def read_actuals(description: str, metrics: list[SuccessMetric]) -> dict[str, str]:
    """The actuals people wrote in the metrics table of ``description`` (managed part), by
    metric name."""
    managed = split_description(description)[0]
    names = {m.name for m in metrics}
    found: dict[str, str] = {}
    for line in managed.splitlines():
        cells = table_cells(line)
        if cells and len(cells) == 4 and cells[0] in names and cells[3]:
            found.setdefault(cells[0], cells[3])
    return found
