"""The checklist audit, the pure part: readiness of one launch from what GitLab and the page
checks say. No I/O: the audit flow gathers the facts and writes the results.

Readiness (0-100) = 80 x share of activity and sister issues closed + 20 x share of pages
passing (pages count fully when the launch has no page checks). Status:

- ``ready``: every issue closed, every page passing and every sister issue question answered
  (readiness stays below 100 until then);
- ``at-risk``: an open issue is past its due date, or a page fails within a week of launch,
  or launch day has passed without being ready;
- ``on-track``: anything else;
- ``launched``: from launch day on, in place of the three above.

Work due after launch day (the retrospective) is not part of readiness, but is reminded about
when overdue like any other. After launch day the note shows the retrospective, and from
``METRICS_DAYS`` after it the success metrics against the actuals people entered in the
retrospective's table. The tracking issue is closed once the retrospective is closed (and, when
the launch has success metrics, once they have been reported).

Blocked work (an open issue waiting for an open one, the playbook's ``depends_on``) is listed;
when it is overdue, the reminder goes to the owner of what blocks it, not to its own owner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from tminus.domain import markers
from tminus.domain.issues import IssueState
from tminus.domain.request import SuccessMetric
from tminus.domain.retro import METRICS_DAYS, is_work

# Days after the metrics report begins that a launch with actuals still missing stays open.
METRICS_GRACE_DAYS = 14

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


@dataclass(frozen=True)
class Blocked:
    issue: IssueState
    by: tuple[IssueState, ...]  # the open issues it waits for


@dataclass(frozen=True)
class Reminder:
    """Today's one reminder on ``issue``: its own lateness and the overdue work it holds up."""

    issue: IssueState
    late: int | None  # days overdue itself, or None
    holding_up: tuple[Overdue, ...] = ()


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
    blocked: list[Blocked] = field(default_factory=list)
    # Sister issues with questions nobody answered yet, and those questions.
    unanswered: list[tuple[IssueState, list[str]]] = field(default_factory=list)
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
        score = round(100 * (0.8 * self.share_done + 0.2 * self.pages_ok_share))
        return min(score, 99) if self.unanswered else score

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
        """The retrospective is closed: the launch is done, once its metrics are reported with
        every actual entered, or ``METRICS_GRACE_DAYS`` after the report began (actuals typed
        late are still shown until then)."""
        if self.retro is None or self.retro.state != "closed" or self.days_to_launch > 0:
            return False
        if not self.metrics:
            return True
        entered = all(actual for _, actual in self.metrics)
        grace_over = self.today >= self.metrics_day + timedelta(days=METRICS_GRACE_DAYS)
        return self.report_metrics and (entered or grace_over)

    @property
    def status(self) -> str:
        if self.days_to_launch <= 0:
            return "launched"
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
    depends_on: dict[str, tuple[str, ...]] | None = None,
    unanswered: list[tuple[IssueState, list[str]]] | None = None,
    retro_key: str | None = None,
    metrics: list[SuccessMetric] | None = None,
    actuals: dict[str, str] | None = None,
) -> LaunchAudit:
    """Audit the activity and sister issues of one launch (the tracking issue excluded).

    ``depends_on``: issue key -> keys of the issues it waits for (the plan's).
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
    by_key = {i.key: i for i in work}
    blocked = []
    for i in work:
        waits = (by_key.get(k) for k in (depends_on or {}).get(i.key or "", ()))
        by = tuple(d for d in waits if d is not None and d.state == "opened")
        if i.state == "opened" and by:
            blocked.append(Blocked(i, by))
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
        blocked=blocked,
        unanswered=list(unanswered or []),
        retro=next((i for i in work if retro_key and i.key == retro_key), None),
        metrics=[(m, (actuals or {}).get(m.name)) for m in metrics or []],
    )


def reminders(audit: LaunchAudit) -> list[Reminder]:
    """Who is nagged today, one reminder per issue: overdue work that waits for nothing
    reminds its own owner; overdue work that is blocked reminds the owners of what blocks it
    (followed down to the open issues that wait for nothing themselves)."""
    blockers = {b.issue.iid: b.by for b in audit.blocked}

    def roots(issue: IssueState, seen: frozenset[int] = frozenset()) -> list[IssueState]:
        if issue.iid not in blockers or issue.iid in seen:
            return [issue]
        return [r for b in blockers[issue.iid] for r in roots(b, seen | {issue.iid})]

    late: dict[int, int] = {}
    holding: dict[int, list[Overdue]] = {}
    issues: dict[int, IssueState] = {}
    for o in audit.overdue:
        if o.issue.iid not in blockers:
            late[o.issue.iid] = o.days
            issues[o.issue.iid] = o.issue
            continue
        for root in roots(o.issue):
            issues[root.iid] = root
            held = holding.setdefault(root.iid, [])
            if o not in held:
                held.append(o)
    return [
        Reminder(issue, late.get(iid), tuple(holding.get(iid, ())))
        for iid, issue in sorted(issues.items())
    ]


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
    lines.append(f"| blocked | {len(audit.blocked) or 'none'} |")
    lines.append(f"| calendar | {audit.calendar_drift or 'no'} entries out of date |")
    if audit.unanswered:
        open_questions = sum(len(q) for _, q in audit.unanswered)
        lines.append(f"| sister questions | {open_questions} not answered |")
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
    if audit.blocked:
        lines += ["", "**Blocked**", ""]
        for b in audit.blocked:
            by = ", ".join(
                f"#{d.iid} ({', '.join(f'@{u}' for u in d.assignees) or 'unassigned'})"
                for d in b.by
            )
            lines.append(f"- #{b.issue.iid} {b.issue.title}: waits for {by}")
    if audit.pages_failing:
        lines += ["", "**Pages failing**", ""]
        lines += [f"- {reason}" for reason in audit.pages_failing]
    if audit.unanswered:
        lines += ["", "**Sister issue questions not answered yet**", ""]
        for issue, questions in audit.unanswered:
            asked = "; ".join(questions)
            lines.append(f"- #{issue.iid} {issue.title}: {len(questions)} open ({asked})")
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
            name, target, source = (_inert(t) for t in (metric.name, metric.target, metric.source))
            lines.append(f"| {name} | {target} | {shown} | {source} |")
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


def reminder_body(reminder: Reminder, owner: str, today: date) -> str:
    """The note of one reminder; for overdue work alone, the same as ``reminder_note``."""
    issue = reminder.issue
    if not reminder.holding_up and reminder.late is not None:
        return reminder_note(Overdue(issue, reminder.late), owner, today)
    who = " ".join(f"@{u}" for u in issue.assignees) or f"@{owner}"
    lines = [
        f"<!-- {REMINDER_MARKER} {today.isoformat()} -->",
        f"{who} reminder from the launch audit:",
    ]
    if reminder.late is not None:
        lines.append(f"- this was due {issue.due_date} ({reminder.late} days ago);")
    for o in reminder.holding_up:
        lines.append(
            f"- #{o.issue.iid} {o.issue.title} waits for this, and was due {o.issue.due_date} "
            f"({o.days} days ago);"
        )
    lines.append(f"Close it when it is done, or tell @{owner} the new date.")
    return "\n".join(lines)


def reminder_marker(today: date) -> str:
    return f"{REMINDER_MARKER} {today.isoformat()}"


def _days(n: int) -> str:
    if n > 0:
        return f"in {n} days"
    if n == 0:
        return "today"
    return f"{-n} days ago"
