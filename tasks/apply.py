"""Applying changes, the same way for every system: one task run per change, no-ops and dry
runs reported without a call.

Retries belong to the adapter (``integrations.retry``: one retry owner per external call, and a
write whose answer was lost is looked up, not re-sent), so these task runs have no Prefect
retries of their own. Only a ``TminusError`` (an input or an external system said no) becomes a
failed row; any other exception is a bug and fails the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from prefect import Task
from prefect.futures import PrefectFuture

from tminus.domain.results import ActionResult, Change, Outcome, is_noop
from tminus.errors import TminusError

T = TypeVar("T")
R = TypeVar("R")
MAX_THREADS = 32  # the adapter bounds the calls in flight (TMINUS_GITLAB_CONCURRENCY)


def failed(row: ActionResult, exc: TminusError) -> ActionResult:
    """``row`` (the planned result) as failed, saying why."""
    return replace(row, outcome=Outcome.failed, detail=str(exc))


@dataclass
class Applying:
    """Changes on their way, in diff order: rows already known, and task runs still going."""

    items: list[ActionResult | tuple[ActionResult, PrefectFuture[ActionResult]]] = field(
        default_factory=list
    )

    def results(self) -> list[ActionResult]:
        """Every row, in the order of the changes; waits for the task runs."""
        rows = []
        for item in self.items:
            if isinstance(item, ActionResult):
                rows.append(item)
                continue
            planned, future = item
            try:
                rows.append(future.result())
            except TminusError as exc:
                rows.append(failed(planned, exc))
        return rows


def apply_changes(
    apply: Task[..., ActionResult], changes: Sequence[Change], dry_run: bool, *args: Any
) -> Applying:
    """Submit ``apply(*args, change)`` for every change that does something (none in a dry
    run: the planned rows say what a real run would do)."""
    out = Applying()
    for change in changes:
        planned = change.planned()
        if dry_run or is_noop(planned):
            out.items.append(planned)
        else:
            out.items.append((planned, apply.submit(*args, change)))
    return out


def settle(
    future: PrefectFuture[list[ActionResult]], key: str, kind: str, title: str
) -> list[ActionResult]:
    """A task run's rows, or one failed row when it raised a ``TminusError``."""
    try:
        return future.result()
    except TminusError as exc:
        row = ActionResult(key=key, kind=kind, title=title, outcome=Outcome.unchanged)
        return [failed(row, exc)]


def each(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``fn(item)`` for every item at once, inside one task run: for calls whose items need no
    task run of their own (the people of a pre-flight check, the links of one change). The
    adapter bounds the calls in flight. Answers in item order; every call runs to its end,
    then the first error (in item order) is raised. Each call runs in a copy of the caller's
    context, so what it logs goes to the caller's run."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(len(items), MAX_THREADS), thread_name_prefix="each") as pool:
        futures = [pool.submit(copy_context().run, fn, item) for item in items]
    first = next((e for f in futures if (e := f.exception()) is not None), None)
    if first is not None:
        raise first
    return [f.result() for f in futures]
