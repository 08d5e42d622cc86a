"""An in-memory issue tracker: the ``IssueTracker`` port without GitLab.

Small and honest: it keeps projects, users, labels, issues, links and notes in dicts and
answers the way GitLab does where tminus relies on it (an unknown project is a 404, links go
both ways, labels an issue names are created with it, notes come back oldest first). The
contract tests (``tests/contract/test_issue_tracker_port.py``) run the same checks against
it and against the GitLab adapter talking to the stand-in, so the two cannot drift apart.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from tminus.domain.issues import IssueState, IssueWrite, split_description
from tminus.errors import PermanentError

SYSTEM = "GitLab (in memory)"


@dataclass
class _Project:
    labels: set[str] = field(default_factory=set)
    issues: dict[int, IssueState] = field(default_factory=dict)
    links: dict[int, set[int]] = field(default_factory=dict)
    blocks: set[tuple[int, int]] = field(default_factory=set)  # (blocker, blocked)
    notes: dict[int, list[tuple[int, str]]] = field(default_factory=dict)


class MemoryTracker:
    """``IssueTracker`` in memory. ``projects`` and ``users`` (username -> id) must exist."""

    def __init__(
        self,
        projects: list[str],
        users: dict[str, int] | None = None,
        *,
        blocking_links: bool = True,
    ) -> None:
        self.url = "memory://gitlab"
        self.blocking_links = blocking_links  # False: like GitLab Free, which has none
        self._projects = {name: _Project() for name in projects}
        self._users = dict(users or {})
        self._next_note = 1
        self._lock = threading.Lock()

    def _project(self, project: str) -> _Project:
        found = self._projects.get(project)
        if found is None:
            raise PermanentError(
                SYSTEM, "project not found: check the project path", status=404, resource=project
            )
        return found

    def _issue(self, project: str, iid: int) -> IssueState:
        issue = self._project(project).issues.get(iid)
        if issue is None:
            raise PermanentError(SYSTEM, "issue not found", status=404, resource=f"#{iid}")
        return issue

    def _username(self, uid: int) -> str:
        return next((name for name, known in self._users.items() if known == uid), str(uid))

    # --- observe ---------------------------------------------------------------------------

    def check_project(self, project: str) -> str:
        self._project(project)
        return f"{self.url}/{project}"

    def user_id(self, username: str) -> int | None:
        return next((i for u, i in self._users.items() if u.lower() == username.lower()), None)

    def find_issues(self, project: str, launch_label: str, marker_prefix: str) -> list[IssueState]:
        with self._lock:
            issues = sorted(self._project(project).issues.values(), key=lambda s: s.iid)
        return [
            s
            for s in issues
            if s.key is not None and (launch_label in s.labels or marker_prefix in s.description)
        ]

    def list_issues(
        self, project: str, labels: list[str], state: str = "opened"
    ) -> list[IssueState]:
        return list(self.iter_issues(project, labels, state))

    def iter_issues(
        self, project: str, labels: list[str], state: str = "opened"
    ) -> Iterator[IssueState]:
        """Oldest (lowest iid) first, each issue as it is when reached; an issue created
        meanwhile comes last, as in GitLab's list in creation order."""
        after = 0
        while True:
            with self._lock:
                issues = self._project(project).issues
                iid = min((i for i in issues if i > after), default=None)
                issue = None if iid is None else issues[iid]
            if issue is None:
                return
            after = issue.iid
            if all(label in issue.labels for label in labels) and state in ("all", issue.state):
                yield issue

    def project_labels(self, project: str) -> set[str]:
        with self._lock:
            return set(self._project(project).labels)

    def linked_iids(self, project: str, iid: int) -> set[int]:
        with self._lock:
            self._issue(project, iid)
            return set(self._project(project).links.get(iid, set()))

    def blocker_iids(self, project: str, iid: int) -> set[int]:
        with self._lock:
            self._issue(project, iid)
            return {a for a, b in self._project(project).blocks if b == iid}

    def open_blockers(self, project: str, iids: list[int]) -> dict[int, set[int]]:
        if not self.blocking_links:
            return {iid: set() for iid in iids}
        with self._lock:
            proj = self._project(project)
            return {
                iid: {
                    a
                    for a, b in proj.blocks
                    if b == iid and a in proj.issues and proj.issues[a].state == "opened"
                }
                for iid in iids
            }

    def find_note(
        self, project: str, iid: int, text: str, after: int | None = None
    ) -> tuple[int, str] | None:
        with self._lock:
            self._issue(project, iid)
            for note_id, body in self._project(project).notes.get(iid, []):
                if text in body and (after is None or note_id > after):
                    return note_id, body
        return None

    # --- apply -----------------------------------------------------------------------------

    def ensure_labels(self, project: str, labels: list[str]) -> list[str]:
        with self._lock:
            have = self._project(project).labels
            created = [label for label in labels if label not in have]
            have.update(created)
        return created

    def create_issue(self, project: str, write: IssueWrite, labels: tuple[str, ...]) -> IssueState:
        with self._lock:
            proj = self._project(project)
            iid = max(proj.issues, default=0) + 1
            proj.labels.update(labels)
            description = write.description or ""
            state = IssueState(
                iid=iid,
                web_url=f"{self.url}/{project}/-/issues/{iid}",
                title=write.title or "",
                description=description,
                labels=tuple(labels),
                due_date=write.due_date,
                assignee_ids=tuple(write.assignee_ids or ()),
                state="opened",
                key=split_description(description)[1],
                assignees=tuple(self._username(u) for u in write.assignee_ids or ()),
            )
            proj.issues[iid] = state
        return state

    def update_issue(self, project: str, iid: int, write: IssueWrite) -> IssueState:
        with self._lock:
            proj = self._project(project)
            state = self._issue(project, iid)
            labels = [label for label in state.labels if label not in write.remove_labels]
            labels += [label for label in write.add_labels if label not in labels]
            proj.labels.update(write.add_labels)
            description = state.description if write.description is None else write.description
            status = {"close": "closed", "reopen": "opened"}.get(write.state_event or "")
            closed_at = state.closed_at
            if status and status != state.state:
                closed_at = datetime.now(UTC) if status == "closed" else None
            ids = state.assignee_ids if write.assignee_ids is None else write.assignee_ids
            state = replace(
                state,
                title=state.title if write.title is None else write.title,
                description=description,
                key=split_description(description)[1],
                due_date=state.due_date if write.due_date is None else write.due_date,
                assignee_ids=tuple(ids),
                assignees=tuple(self._username(u) for u in ids),
                labels=tuple(labels),
                state=status or state.state,
                closed_at=closed_at,
            )
            proj.issues[iid] = state
        return state

    def link_issues(self, project: str, iid: int, target_iid: int) -> None:
        with self._lock:
            self._issue(project, iid)
            self._issue(project, target_iid)
            links = self._project(project).links
            links.setdefault(iid, set()).add(target_iid)
            links.setdefault(target_iid, set()).add(iid)

    def block_issue(self, project: str, blocker_iid: int, blocked_iid: int) -> bool:
        with self._lock:
            self._issue(project, blocker_iid)
            self._issue(project, blocked_iid)
            proj = self._project(project)
            if not self.blocking_links:
                return False
            if blocked_iid in proj.links.get(blocker_iid, set()):  # linked already, some way
                return (blocker_iid, blocked_iid) in proj.blocks
            proj.links.setdefault(blocker_iid, set()).add(blocked_iid)
            proj.links.setdefault(blocked_iid, set()).add(blocker_iid)
            proj.blocks.add((blocker_iid, blocked_iid))
            return True

    def add_note(self, project: str, iid: int, body: str) -> int:
        with self._lock:
            self._issue(project, iid)
            note_id = self._next_note
            self._next_note += 1
            self._project(project).notes.setdefault(iid, []).append((note_id, body))
        return note_id

    def update_note(self, project: str, iid: int, note_id: int, body: str) -> None:
        with self._lock:
            self._issue(project, iid)
            notes = self._project(project).notes.get(iid, [])
            for i, (known, _) in enumerate(notes):
                if known == note_id:
                    notes[i] = (note_id, body)
                    return
        raise PermanentError(SYSTEM, "note not found", status=404, resource=f"note {note_id}")
