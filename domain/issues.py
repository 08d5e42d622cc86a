"""Reconcile, the pure part: what an issue tracker must offer, and what to change in an issue.

An issue's description has two parts split by its key marker (an HTML comment, invisible in
GitLab): above it the *managed* text tminus renders from the playbook, below it whatever people
write. tminus rewrites only the managed text, keeps the ticks people put in its checklists, and
never touches the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from tminus.domain.plan import KEY_MARKER_PATTERN, REF_PATTERN, IssueRole, IssueSpec, key_marker

# Labels tminus owns: a label with one of these prefixes that the plan does not ask for is
# removed (a tier change moves an issue from launch-tier::L1 to launch-tier::L2).
MANAGED_LABEL_PREFIXES = ("launch-tier::", "launch-issue::")
DROPPED_LABEL = "launch-status::dropped"
CANCELLED_LABEL = "launch-status::cancelled"  # on a tracking issue; a new run resumes it


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
    ) -> list[IssueState]: ...

    def ensure_labels(self, project: str, labels: list[str]) -> list[str]:
        """Create the labels the project lacks; return the ones created."""
        ...

    def create_issue(
        self, project: str, write: IssueWrite, labels: tuple[str, ...]
    ) -> IssueState: ...

    def update_issue(self, project: str, iid: int, write: IssueWrite) -> IssueState: ...

    def linked_iids(self, project: str, iid: int) -> set[int]: ...

    def link_issues(self, project: str, iid: int, target_iid: int) -> None: ...

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
    new_managed = carry_ticks(managed, old_managed)
    description = None
    if _normal(new_managed) != _normal(old_managed) or existing.key != spec.key:
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
        description=compose_description(managed, spec.key),
        due_date=spec.due_date,
        assignee_ids=(assignee_id,) if assignee_id else None,
    )


def drop_write(existing: IssueState) -> IssueWrite | None:
    """Close an issue whose activity no longer applies; None when already closed."""
    if existing.state == "closed":
        return None
    return IssueWrite(state_event="close", add_labels=(DROPPED_LABEL,))
