"""The checklist audit, the pure part: readiness of one launch from what GitLab and the page
checks say. No I/O: the audit flow gathers the facts and writes the results.

Readiness (0-100) = 80 x share of activity and sister issues closed + 20 x share of pages
passing (pages count fully when the launch has no page checks). Status:

- ``ready``: every issue closed, every page passing and every sister issue question answered
  (readiness stays below 100 until then);
- ``at-risk``: an open issue is past its due date, or a page fails within a week of launch,
  or launch day has passed without being ready;
- ``on-track``: anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from tminus.domain import markers
from tminus.domain.issues import DROPPED_LABEL, IssueState

STATUS_LABEL_PREFIX = "launch-status::"
STATUSES = ("on-track", "at-risk", "ready")
AUDIT_NOTE_MARKER = markers.AUDIT
REMINDER_MARKER = markers.REMINDER


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
    # Sister issues with questions nobody answered yet, and those questions.
    unanswered: list[tuple[IssueState, list[str]]] = field(default_factory=list)

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
        score = round(100 * (0.8 * self.share_done + 0.2 * self.pages_ok_share))
        return min(score, 99) if self.unanswered else score

    @property
    def days_to_launch(self) -> int:
        return (self.launch_date - self.today).days

    @property
    def status(self) -> str:
        if self.done == self.total and not self.pages_failing and not self.unanswered:
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
    unanswered: list[tuple[IssueState, list[str]]] | None = None,
) -> LaunchAudit:
    """Audit the activity and sister issues of one launch (the tracking issue excluded)."""
    work = [
        i
        for i in issues
        if i.key
        and ("/activity/" in i.key or "/sister/" in i.key)
        and DROPPED_LABEL not in i.labels
    ]
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
        total=len(work),
        done=sum(1 for i in work if i.state == "closed"),
        overdue=overdue,
        pages_total=pages_total,
        pages_failing=list(pages_failing or []),
        calendar_drift=calendar_drift,
        unanswered=list(unanswered or []),
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
    if audit.unanswered:
        open_questions = sum(len(q) for _, q in audit.unanswered)
        lines.append(f"| sister questions | {open_questions} not answered |")
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
    if audit.unanswered:
        lines += ["", "**Sister issue questions not answered yet**", ""]
        for issue, questions in audit.unanswered:
            asked = "; ".join(questions)
            lines.append(f"- #{issue.iid} {issue.title}: {len(questions)} open ({asked})")
    return "\n".join(lines)


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
