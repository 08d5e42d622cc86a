"""GitLab issues, the pure part: the tracker port, and the diff of the plan against the issues
a tracker has, as typed changes (``IssueChange``) that ``tminus.tasks.issues`` applies.

An issue's description has two parts split by its key marker (an HTML comment, invisible in
GitLab): above it the *managed* text tminus renders from the playbook, below it whatever people
write. tminus rewrites only the managed text, keeps the ticks people put in its checklists, and
never touches the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from tminus.domain.answers import missing_form
from tminus.domain.plan import (
    KEY_MARKER_PATTERN,
    LATE_WORK,
    REF_PATTERN,
    IssueRole,
    IssueSpec,
    Plan,
    key_marker,
)
from tminus.domain.results import ActionResult, Outcome

# Labels tminus owns: a label with one of these prefixes that the plan does not ask for is
# removed (a tier change moves an issue from launch-tier::L1 to launch-tier::L2).
MANAGED_LABEL_PREFIXES = ("launch-tier::", "launch-issue::")
DROPPED_LABEL = "launch-status::dropped"
CANCELLED_LABEL = "launch-status::cancelled"  # on a tracking issue; a new run resumes it
# On an issue waiting for an open one, where GitLab has no blocking links (Free).
BLOCKED_LABEL = "launch-blocked"


@dataclass(frozen=True)
class IssueState:
    """An issue as the tracker has it."""

    iid: int
    web_url: str
    title: str
    description: str
    labels: tuple[str, ...]
    due_date: date | None
    assignee_ids: tuple[int, ...]
    state: str  # "opened" | "closed"
    key: str | None = None
    assignees: tuple[str, ...] = ()  # usernames
    closed_at: datetime | None = None


@dataclass(frozen=True)
class IssueWrite:
    """Fields to send on create, or the changed fields on update (None = leave as is)."""

    title: str | None = None
    description: str | None = None
    due_date: date | None = None
    assignee_ids: tuple[int, ...] | None = None
    add_labels: tuple[str, ...] = ()
    remove_labels: tuple[str, ...] = ()
    state_event: str | None = None  # "close" | "reopen"

    def is_empty(self) -> bool:
        return self == IssueWrite()

    def changed_fields(self) -> list[str]:
        names = []
        for name in ("title", "description", "due_date", "assignee_ids", "state_event"):
            if getattr(self, name) is not None:
                names.append(name)
        if self.add_labels or self.remove_labels:
            names.append("labels")
        return names


class IssueTracker(Protocol):
    """What reconciling issues needs from an issue tracker (GitLab, or a stand-in)."""

    def check_project(self, project: str) -> str:
        """Return the project's web URL; raise PermanentError when it cannot be used."""
        ...

    def user_id(self, username: str) -> int | None: ...

    def find_issues(self, project: str, launch_label: str, marker_prefix: str) -> list[IssueState]:
        """Every issue of a launch, open or closed, found by label and by key marker."""
        ...

    def list_issues(
        self, project: str, labels: list[str], state: str = "opened"
    ) -> list[IssueState]:
        """Issues with all of ``labels`` in ``state`` ("opened", "closed" or "all"), oldest
        first."""
        ...

    def iter_issues(
        self, project: str, labels: list[str], state: str = "opened"
    ) -> Iterator[IssueState]:
        """The issues of ``list_issues``, in the same order, read a page at a time as they are
        consumed: a caller that keeps none of them holds at most one page."""
        ...

    def project_labels(self, project: str) -> set[str]:
        """The names of the project's labels."""
        ...

    def ensure_labels(self, project: str, labels: list[str]) -> list[str]:
        """Create the labels the project lacks; return the ones created."""
        ...

    def create_issue(
        self, project: str, write: IssueWrite, labels: tuple[str, ...]
    ) -> IssueState: ...

    def update_issue(self, project: str, iid: int, write: IssueWrite) -> IssueState: ...

    def linked_iids(self, project: str, iid: int) -> set[int]: ...

    def link_issues(self, project: str, iid: int, target_iid: int) -> None: ...

    def blocker_iids(self, project: str, iid: int) -> set[int]:
        """The issues linked as blocking ``iid`` (GitLab's ``is_blocked_by`` links)."""
        ...

    def open_blockers(self, project: str, iids: list[int]) -> dict[int, set[int]]:
        """For each of ``iids``, the *open* issues of ``project`` linked as blocking it, read
        for all of them at once; empty where this GitLab has no blocking links (Free)."""
        ...

    def block_issue(self, project: str, blocker_iid: int, blocked_iid: int) -> bool:
        """Link ``blocker_iid`` as blocking ``blocked_iid`` (idempotent). False, and no link,
        when this GitLab has no blocking links (Free) or the two are linked otherwise."""
        ...

    def add_note(self, project: str, iid: int, body: str) -> int: ...

    def find_note(
        self, project: str, iid: int, text: str, after: int | None = None
    ) -> tuple[int, str] | None:
        """The oldest note containing ``text`` (with an id above ``after``): (note id, body)."""
        ...

    def update_note(self, project: str, iid: int, note_id: int, body: str) -> None: ...


# --- description handling ----------------------------------------------------------------

_CHECKBOX = re.compile(r"^(\s*[-*] )\[([ xX])\] (.*)$")


def split_description(description: str) -> tuple[str, str | None, str]:
    """(managed text, key, people's text below the marker). No marker: all is managed."""
    match = KEY_MARKER_PATTERN.search(description or "")
    if not match:
        return (description or "").strip(), None, ""
    return description[: match.start()].strip(), match.group(1), description[match.end() :]


def compose_description(managed: str, key: str, tail: str = "") -> str:
    return f"{managed.strip()}\n\n{key_marker(key)}{tail}"


def _item_id(text: str) -> str:
    """A checklist item's identity: its text up to the first ' — ' (dates and links follow)."""
    return text.split(" — ", 1)[0].strip()


def carry_ticks(new: str, old: str) -> str:
    """Tick the items of ``new`` that people ticked in ``old``."""
    ticked = set()
    for line in old.splitlines():
        m = _CHECKBOX.match(line)
        if m and m.group(2) in "xX":
            ticked.add(_item_id(m.group(3)))
    if not ticked:
        return new
    out = []
    for line in new.splitlines():
        m = _CHECKBOX.match(line)
        if m and _item_id(m.group(3)) in ticked:
            line = f"{m.group(1)}[x] {m.group(3)}"
        out.append(line)
    return "\n".join(out)


_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def table_cells(line: str) -> list[str] | None:
    """The cells of a markdown table row (``| a | b |``), or None for any other line."""
    text = line.strip()
    if not (text.startswith("|") and text.endswith("|") and len(text) > 1):
        return None
    return [cell.strip() for cell in _CELL_SPLIT.split(text[1:-1])]


def carry_cells(new: str, old: str) -> str:
    """Keep what people wrote in the empty last cell of a table row of ``new`` (an actual in
    the success metrics table), matching rows by their first cell."""
    written: dict[str, str] = {}
    for line in old.splitlines():
        cells = table_cells(line)
        if cells and len(cells) > 1 and cells[-1] and not set(cells[-1]) <= set("-: "):
            written.setdefault(cells[0], cells[-1])
    if not written:
        return new
    out = []
    for line in new.splitlines():
        cells = table_cells(line)
        if cells and len(cells) > 1 and not cells[-1] and cells[0] in written:
            line = "| " + " | ".join([*cells[:-1], written[cells[0]]]) + " |"
        out.append(line)
    return "\n".join(out)


def _normal(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").strip().splitlines())


def fill_refs(text: str, refs: dict[str, int]) -> str:
    """Replace ``[[ref:KEY]]`` placeholders with ``#iid`` (or a note when not created)."""
    return REF_PATTERN.sub(
        lambda m: f"#{refs[m.group(1)]}" if m.group(1) in refs else "(issue not created yet)", text
    )


def diff_issue(
    spec: IssueSpec,
    existing: IssueState,
    *,
    managed: str,
    assignee_id: int | None,
) -> IssueWrite:
    """The smallest write that brings ``existing`` to ``spec``.

    ``managed`` is the spec's description with references filled in. Assignees are set only
    when the issue has none: a person reassigning work is not drift. A closed issue stays
    closed (closed means done) unless tminus itself closed it as dropped.
    """
    old_managed, _, tail = split_description(existing.description)
    new_managed = carry_cells(carry_ticks(managed, old_managed), old_managed)
    description = None
    if spec.questions and (missing := missing_form(tail, spec.questions)):
        tail = tail.rstrip("\n") + "\n" + missing  # only added to: answers stay as typed
        description = compose_description(new_managed, spec.key, tail)
    elif _normal(new_managed) != _normal(old_managed) or existing.key != spec.key:
        description = compose_description(new_managed, spec.key, tail)

    have = set(existing.labels)
    want = set(spec.labels)
    add = tuple(label for label in spec.labels if label not in have)
    remove = tuple(
        sorted(
            label
            for label in have - want
            if label.startswith(MANAGED_LABEL_PREFIXES)
            or label == DROPPED_LABEL
            or (label == CANCELLED_LABEL and spec.role is IssueRole.tracking)
        )
    )
    state_event = None
    if existing.state == "closed" and DROPPED_LABEL in have:
        state_event = "reopen"
    return IssueWrite(
        title=spec.title if existing.title != spec.title else None,
        description=description,
        due_date=spec.due_date if existing.due_date != spec.due_date else None,
        assignee_ids=(assignee_id,) if assignee_id and not existing.assignee_ids else None,
        add_labels=add,
        remove_labels=remove,
        state_event=state_event,
    )


def new_issue(spec: IssueSpec, *, managed: str, assignee_id: int | None) -> IssueWrite:
    return IssueWrite(
        title=spec.title,
        description=compose_description(managed, spec.key, spec.answer_form),
        due_date=spec.due_date,
        assignee_ids=(assignee_id,) if assignee_id else None,
    )


def drop_write(existing: IssueState) -> IssueWrite | None:
    """Close an issue whose activity no longer applies; None when already closed."""
    if existing.state == "closed":
        return None
    return IssueWrite(state_event="close", add_labels=(DROPPED_LABEL,))


# --- the diff as typed changes ----------------------------------------------------------------


def _row(spec: IssueSpec, outcome: Outcome, existing: IssueState | None = None) -> ActionResult:
    return ActionResult(
        key=spec.key,
        kind=spec.role.value,
        title=spec.title,
        outcome=outcome,
        url=existing.web_url if existing else None,
        iid=existing.iid if existing else None,
    )


@dataclass(frozen=True)
class CreateLabels:
    """Create the labels the launch uses that the project lacks."""

    slug: str
    missing: tuple[str, ...]
    total: int

    @property
    def key(self) -> str:
        return f"{self.slug}/labels"

    def planned(self) -> ActionResult:
        n = len(self.missing)
        return ActionResult(
            key=self.key,
            kind="labels",
            title="Labels",
            outcome=Outcome.created if n else Outcome.unchanged,
            detail=f"{n} of {self.total} created" if n else f"all {self.total} present",
        )


@dataclass(frozen=True)
class CreateIssue:
    spec: IssueSpec
    write: IssueWrite

    @property
    def key(self) -> str:
        return self.spec.key

    def planned(self) -> ActionResult:
        return _row(self.spec, Outcome.created)


@dataclass(frozen=True)
class UpdateIssue:
    """Send the fields that drifted (``write``); an empty write is a no-op."""

    spec: IssueSpec
    existing: IssueState
    write: IssueWrite

    @property
    def key(self) -> str:
        return self.spec.key

    def planned(self) -> ActionResult:
        if self.write.is_empty():
            return _row(self.spec, Outcome.unchanged, self.existing)
        row = _row(self.spec, Outcome.updated, self.existing)
        fields = self.write.changed_fields()
        if self.write.due_date is not None:  # a moved date says from what to what
            was = self.existing.due_date.isoformat() if self.existing.due_date else "none"
            fields[fields.index("due_date")] = f"due_date {was} -> {self.write.due_date}"
        row.detail = "changed: " + ", ".join(fields)
        return row


@dataclass(frozen=True)
class DropIssue:
    """Close an issue whose activity no longer applies, saying why; never delete it."""

    existing: IssueState
    reason: str

    @property
    def key(self) -> str:
        return self.existing.key or ""

    @property
    def write(self) -> IssueWrite | None:
        return drop_write(self.existing)

    @property
    def note(self) -> str:
        return f"tminus: {self.reason}. Closed; it reopens if the activity comes back."

    def planned(self) -> ActionResult:
        closing = self.write is not None
        return ActionResult(
            key=self.key,
            kind="dropped",
            title=self.existing.title,
            outcome=Outcome.closed if closing else Outcome.unchanged,
            url=self.existing.web_url,
            iid=self.existing.iid,
            detail=self.reason if closing else "already closed",
        )


@dataclass(frozen=True)
class LinkIssues:
    """Link the launch's issues to its tracking issue (GitLab's related issues)."""

    tracking_iid: int
    missing: tuple[int, ...]
    total: int

    @property
    def key(self) -> str:
        return f"tracking#{self.tracking_iid}/links"

    def planned(self) -> ActionResult:
        n = len(self.missing)
        return ActionResult(
            key=self.key,
            kind="links",
            title="Links to the tracking issue",
            outcome=Outcome.created if n else Outcome.unchanged,
            detail=f"{n} added" if n else f"all {self.total} linked",
        )


@dataclass(frozen=True)
class BlockIssue:
    """Show that an issue waits for open ones (its description says which, always): GitLab links
    each as blocking it; where GitLab has no blocking links (Free), the issue gets the label
    ``launch-blocked`` instead, removed once nothing it waits for is open."""

    key: str
    title: str
    iid: int
    url: str | None
    blockers: tuple[int, ...]  # the open issues it waits for
    link: tuple[int, ...]  # of those, the ones not linked as blocking yet
    unlabel: bool = False

    def planned(self) -> ActionResult:
        refs = ", ".join(f"#{i}" for i in self.blockers)
        if self.unlabel:
            outcome, detail = Outcome.updated, f"not blocked any more: {BLOCKED_LABEL} removed"
        elif self.link:
            outcome = Outcome.created
            detail = f"blocked by {refs}: linking {', '.join(f'#{i}' for i in self.link)}"
        else:
            outcome, detail = Outcome.unchanged, f"blocked by {refs}" if refs else "not blocked"
        return ActionResult(
            key=f"{self.key}/blocked-by",
            kind="blocked-by",
            title=self.title,
            outcome=outcome,
            url=self.url,
            iid=self.iid,
            detail=detail,
        )


IssueChange = CreateLabels | CreateIssue | UpdateIssue | DropIssue | LinkIssues | BlockIssue


def label_change(plan: Plan, have: set[str]) -> CreateLabels:
    labels = plan.labels()
    missing = tuple(label for label in labels if label not in have)
    return CreateLabels(plan.request.slug, missing, len(labels))


def issue_change(
    spec: IssueSpec,
    existing: IssueState | None,
    *,
    refs: dict[str, int],
    assignee_id: int | None,
    late_work: str = "",
) -> CreateIssue | UpdateIssue:
    """Create the issue, or update the fields that drifted (a no-op when none did).

    ``late_work`` fills the spec's late-work placeholder (``tminus.domain.retro``)."""
    managed = fill_refs(spec.description, refs).replace(LATE_WORK, late_work)
    if existing is None:
        return CreateIssue(spec, new_issue(spec, managed=managed, assignee_id=assignee_id))
    write = diff_issue(spec, existing, managed=managed, assignee_id=assignee_id)
    return UpdateIssue(spec, existing, write)


def drop_changes(plan: Plan, existing: dict[str, IssueState]) -> list[DropIssue]:
    """Close the issues of activities the launch no longer has (tier or playbook changed)."""
    planned = {spec.key for spec in plan.all_issues}
    reason = (
        f"this activity is not part of the {plan.request.tier.value} launch any more "
        f"(playbook {plan.playbook})"
    )
    return [DropIssue(s, reason) for key, s in existing.items() if key not in planned]


def link_change(tracking_iid: int, iids: list[int], linked: set[int]) -> LinkIssues:
    return LinkIssues(tracking_iid, tuple(i for i in iids if i not in linked), len(iids))


def block_change(
    spec: IssueSpec,
    issue: IssueState,
    dependencies: dict[str, IssueState],
    linked: set[int],
) -> BlockIssue:
    """What shows that ``issue`` (``spec``'s) waits for its open dependencies: the blocking
    links it lacks, or, where it carries the fallback label, that label while one is open.

    ``dependencies`` are the issues of ``spec.depends_on`` as they will be after this run (a
    dropped one is reopened); ``linked`` the iids already linked as blocking ``issue``.
    """
    is_open = issue.state == "opened"
    blockers = tuple(
        dep.iid
        for key in spec.depends_on
        if (dep := dependencies.get(key)) is not None
        and (dep.state == "opened" or DROPPED_LABEL in dep.labels)
    )
    if not is_open:
        blockers = ()
    labelled = BLOCKED_LABEL in issue.labels
    # Once labelled, this GitLab has shown it has no blocking links: not asked again.
    link = () if labelled else tuple(b for b in blockers if b not in linked)
    return BlockIssue(
        key=spec.key,
        title=spec.title,
        iid=issue.iid,
        url=issue.web_url or None,
        blockers=blockers,
        link=link,
        unlabel=labelled and not blockers and is_open,
    )
