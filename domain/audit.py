"""The checklist audit, the pure part: readiness of one launch from what GitLab and the page
checks say. No I/O: the audit flow gathers the facts and writes the results.

Readiness (0-100) = 80 x share of activity and sister issues closed + 20 x share of pages
passing (pages count fully when the launch has no page checks). Status:

- ``ready``: every issue closed and every page passing;
- ``at-risk``: an open issue is past its due date, or a page fails within a week of launch,
  or launch day has passed without being ready;
- ``on-track``: anything else;
- ``launched``: from launch day on, in place of the three above.

Work due after launch day (the retrospective) is not part of readiness, but is reminded about
when overdue like any other. After launch day the note shows the retrospective, and from
``METRICS_DAYS`` after it the success metrics against the actuals people entered in the
retrospective's table. The tracking issue is closed once the retrospective is closed (and, when
the launch has success metrics, once they have been reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from tminus.domain import markers
from tminus.domain.issues import IssueState
from tminus.domain.request import SuccessMetric
from tminus.domain.retro import METRICS_DAYS, is_work

STATUS_LABEL_PREFIX = "launch-status::"
STATUSES = ("on-track", "at-risk", "ready", "launched")
AUDIT_NOTE_MARKER = markers.AUDIT
REMINDER_MARKER = markers.REMINDER
DONE_MARKER = markers.DONE


@dataclass(frozen=True)
class Overdue:
    issue: IssueState
    days: int

    @property
    def who(self) -> tuple[str, ...]:
        return self.issue.assignees


@dataclass
class LaunchAudit:
    slug: str
    title: str
    launch_date: date
    today: date
    total: int
    done: int
    overdue: list[Overdue]
    pages_total: int = 0
    pages_failing: list[str] = field(default_factory=list)
    calendar_drift: int = 0
    retro: IssueState | None = None
    # (metric, the actual entered in the retrospective or None), once reported
    metrics: list[tuple[SuccessMetric, str | None]] = field(default_factory=list)

    @property
    def share_done(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def pages_ok_share(self) -> float:
        if not self.pages_total:
            return 1.0
        return (self.pages_total - len(self.pages_failing)) / self.pages_total

    @property
    def readiness(self) -> int:
        return round(100 * (0.8 * self.share_done + 0.2 * self.pages_ok_share))

    @property
    def days_to_launch(self) -> int:
        return (self.launch_date - self.today).days

    @property
    def metrics_day(self) -> date:
        return self.launch_date + timedelta(days=METRICS_DAYS)

    @property
    def report_metrics(self) -> bool:
        return bool(self.metrics) and self.today >= self.metrics_day

    @property
    def close_tracking(self) -> bool:
        """The retrospective is closed: the launch is done, once its metrics are reported."""
        if self.retro is None or self.retro.state != "closed" or self.days_to_launch > 0:
            return False
        return not self.metrics or self.report_metrics

    @property
    def status(self) -> str:
        if self.days_to_launch <= 0:
            return "launched"
        if self.done == self.total and not self.pages_failing:
            return "ready"
        if self.overdue or self.days_to_launch < 0:
            return "at-risk"
        if self.pages_failing and self.days_to_launch <= 7:
            return "at-risk"
        return "on-track"


def audit_launch(
    slug: str,
    title: str,
    launch_date: date,
    issues: list[IssueState],
    today: date,
    *,
    pages_total: int = 0,
    pages_failing: list[str] | None = None,
    calendar_drift: int = 0,
    retro_key: str | None = None,
    metrics: list[SuccessMetric] | None = None,
    actuals: dict[str, str] | None = None,
) -> LaunchAudit:
    """Audit the activity and sister issues of one launch (the tracking issue excluded).
    ``retro_key`` names the retrospective; ``actuals`` are read from it, by metric name."""
    work = [i for i in issues if is_work(i)]
    # Readiness is about launch day: work due after it does not count.
    before = [i for i in work if i.due_date is None or i.due_date <= launch_date]
    overdue = [
        Overdue(i, (today - i.due_date).days)
        for i in work
        if i.state == "opened" and i.due_date is not None and i.due_date < today
    ]
    overdue.sort(key=lambda o: (-o.days, o.issue.iid))
    return LaunchAudit(
        slug=slug,
        title=title,
        launch_date=launch_date,
        today=today,
        total=len(before),
        done=sum(1 for i in before if i.state == "closed"),
        overdue=overdue,
        pages_total=pages_total,
        pages_failing=list(pages_failing or []),
        calendar_drift=calendar_drift,
        retro=next((i for i in work if retro_key and i.key == retro_key), None),
        metrics=[(m, (actuals or {}).get(m.name)) for m in metrics or []],
    )


def audit_note(audit: LaunchAudit, owner: str) -> str:
    """The audit note on the tracking issue; one note, rewritten in place by every audit."""
    lines = [
        f"<!-- {AUDIT_NOTE_MARKER} -->",
        f"### Launch readiness: {audit.readiness}% ({audit.status})",
        "",
        f"Audited {audit.today} · launch day {audit.launch_date} ({_days(audit.days_to_launch)})",
        "",
        "| check | result |",
        "|---|---|",
        f"| activities done | {audit.done} of {audit.total} |",
        f"| overdue | {len(audit.overdue) or 'none'} |",
    ]
    if audit.pages_total:
        failing = len(audit.pages_failing)
        lines.append(f"| pages live | {audit.pages_total - failing} of {audit.pages_total} |")
    lines.append(f"| calendar | {audit.calendar_drift or 'no'} entries out of date |")
    if audit.days_to_launch <= 0:
        retro = audit.retro
        state = f"#{retro.iid}, {retro.state}" if retro else "not created yet"
        lines.append(f"| retrospective | {state} |")
    if audit.overdue:
        lines += ["", "**Overdue**", ""]
        for o in audit.overdue:
            who = ", ".join(f"@{u}" for u in o.who) or f"@{owner} (unassigned)"
            issue = o.issue
            lines.append(
                f"- #{issue.iid} {issue.title}: due {issue.due_date}, {o.days} days ago, {who}"
            )
    if audit.pages_failing:
        lines += ["", "**Pages failing**", ""]
        lines += [f"- {reason}" for reason in audit.pages_failing]
    if audit.report_metrics:
        where = f"#{audit.retro.iid}" if audit.retro else "the retrospective issue"
        lines += [
            "",
            f"**Success metrics** (from {audit.metrics_day}; actuals as entered in {where})",
            "",
            "| metric | target | actual | source |",
            "|---|---|---|---|",
        ]
        for metric, actual in audit.metrics:
            shown = _inert(actual) if actual else "not entered yet"
            lines.append(f"| {metric.name} | {metric.target} | {shown} | {metric.source} |")
    return "\n".join(lines)


def done_note(audit: LaunchAudit) -> str:
    """The note on the tracking issue when the audit closes it."""
    retro = f" #{audit.retro.iid}" if audit.retro else ""
    return (
        f"<!-- {DONE_MARKER} -->\ntminus: the retrospective{retro} is closed, so the launch "
        "is done: closing its tracking issue (once: reopened, it stays open and audited)."
    )


def _inert(text: str) -> str:
    """A person's cell shown in tminus's note: one short line, no table break, no mention."""
    flat = " ".join(text.split())
    flat = flat if len(flat) <= 80 else flat[:79] + "…"
    return flat.replace("|", "\\|").replace("@", "@\u2060").replace("<", "&lt;")


def reminder_note(overdue: Overdue, owner: str, today: date) -> str:
    who = " ".join(f"@{u}" for u in overdue.who) or f"@{owner}"
    return (
        f"<!-- {REMINDER_MARKER} {today.isoformat()} -->\n"
        f"{who} reminder from the launch audit: this was due {overdue.issue.due_date} "
        f"({overdue.days} days ago). Close it when it is done, or tell @{owner} the new date."
    )


def reminder_marker(today: date) -> str:
    return f"{REMINDER_MARKER} {today.isoformat()}"


def _days(n: int) -> str:
    if n > 0:
        return f"in {n} days"
    if n == 0:
        return "today"
    return f"{-n} days ago"
