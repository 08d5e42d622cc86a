"""The retry policy every task that talks to an external system shares."""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from tminus.errors import is_transient

RETRIES = 4
RETRY_DELAYS = exponential_backoff(backoff_factor=1)
RETRY_JITTER = 0.5


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only transient failures (429, 5xx, timeouts); permanent ones fail fast.

    Must stay a plain function: Prefect only calls ``inspect.isfunction`` conditions.
    """
    exc = state.data
    if not isinstance(exc, BaseException):
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:  # pragma: no cover - defensive: unreadable state means no retry
            return False
    return isinstance(exc, BaseException) and is_transient(exc)


RETRY_OPTIONS: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_jitter_factor": RETRY_JITTER,
    "retry_condition_fn": retry_transient,
}
