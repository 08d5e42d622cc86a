"""What a run did, system by system: one row per change (``ActionResult``) with its outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol


class Outcome(str, Enum):
    created = "created"
    updated = "updated"
    unchanged = "unchanged"
    closed = "closed"
    skipped = "skipped"
    failed = "failed"


@dataclass
class ActionResult:
    """One line of the results table."""

    key: str
    kind: str
    title: str
    outcome: Outcome
    url: str | None = None
    detail: str = ""
    iid: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


class Change(Protocol):
    """One change a pure diff found between the plan and what an adapter observed.

    Every system has the same shape: an adapter *observes* (reads only), a domain function
    *diffs* the plan against it into changes, and an adapter *applies* each change (one task
    run per change). A dry run is the diff without the apply: it reports ``planned()``.
    """

    @property
    def key(self) -> str: ...

    def planned(self) -> ActionResult:
        """The row this change reports if applying it succeeds; a no-op reports
        ``unchanged`` (or ``skipped``) and is never applied."""
        ...


def is_noop(row: ActionResult) -> bool:
    return row.outcome in (Outcome.unchanged, Outcome.skipped)
