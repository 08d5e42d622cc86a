"""The one retry owner: bounded attempts and deadline, Retry-After, lost writes looked up."""

from __future__ import annotations

import pytest

from tminus.errors import MaybeSentError, PermanentError, TransientError
from tminus.integrations.retry import RetryPolicy


class Clock:
    """A fake clock that the fake sleep moves forward."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def policy(self, **kw: float) -> RetryPolicy:
        return RetryPolicy(sleep=self.sleep, clock=lambda: self.now, jitter=0, **kw)  # type: ignore[arg-type]


def failing(errors: list[Exception], result: str = "done") -> tuple[list[int], object]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return calls, fn


def refused(**kw: object) -> TransientError:
    return TransientError("GitLab", "cannot reach GitLab", sent=False, **kw)  # type: ignore[arg-type]


def test_transient_failures_are_retried_with_backoff() -> None:
    clock = Clock()
    calls, fn = failing([refused(), refused(), refused()])
    assert clock.policy().call(fn) == "done"  # type: ignore[arg-type]
    assert len(calls) == 4 and clock.waits == [0.5, 1.0, 2.0]


def test_retry_after_is_honoured_within_the_deadline() -> None:
    clock = Clock()
    _, fn = failing([refused(retry_after=3.0), refused(retry_after=20.0)])
    clock.policy(max_wait=8).call(fn)  # type: ignore[arg-type]
    assert clock.waits == [3.0, 20.0]  # longer than the backoff cap: still honoured
    clock = Clock()
    calls, fn = failing([refused(retry_after=300.0)])
    with pytest.raises(TransientError, match=r"asked to wait 300s"):
        clock.policy().call(fn)  # type: ignore[arg-type]
    assert clock.waits == [] and len(calls) == 1  # gives up at once: no pointless early retry


def test_permanent_errors_are_not_retried() -> None:
    clock = Clock()
    calls, fn = failing([PermanentError("GitLab", "404 Project Not Found", status=404)])
    with pytest.raises(PermanentError):
        clock.policy().call(fn)  # type: ignore[arg-type]
    assert len(calls) == 1 and clock.waits == []


def test_attempts_and_deadline_bound_a_call() -> None:
    clock = Clock()
    calls, fn = failing([refused() for _ in range(100)])
    with pytest.raises(TransientError, match="gave up after 8 attempts"):
        clock.policy(deadline=1000).call(fn)  # type: ignore[arg-type]
    assert len(calls) == 8
    clock = Clock()
    calls, fn = failing([refused() for _ in range(100)])
    with pytest.raises(TransientError, match="cannot reach GitLab; gave up after 5 attempts"):
        clock.policy(deadline=10).call(fn)  # type: ignore[arg-type]
    assert clock.now <= 10


def test_a_lost_write_is_looked_up_not_resent() -> None:
    clock = Clock()
    lost = TransientError("GitLab", "502 Bad Gateway", status=502)
    calls, fn = failing([lost])
    lookups: list[int] = []

    def recover() -> str | None:
        lookups.append(1)
        return "found"

    assert clock.policy().call(fn, idempotent=False, recover=recover) == "found"  # type: ignore[arg-type]
    assert len(calls) == 1 and len(lookups) == 1


def test_a_lost_write_that_was_not_found_is_sent_again() -> None:
    clock = Clock()
    calls, fn = failing([TransientError("GitLab", "502", status=502)])
    assert clock.policy().call(fn, idempotent=False, recover=lambda: None) == "done"  # type: ignore[arg-type]
    assert len(calls) == 2


def test_a_lost_write_that_cannot_be_looked_up_is_maybe_sent() -> None:
    clock = Clock()
    calls, fn = failing([TransientError("Slack", "Slack answered 502", status=502)])
    with pytest.raises(MaybeSentError, match="may have been carried out"):
        clock.policy().call(fn, idempotent=False)  # type: ignore[arg-type]
    assert len(calls) == 1
    # ... but a write that surely was not sent (refused, 429) is retried.
    calls, fn = failing([refused(), TransientError("Slack", "429", status=429, sent=False)])
    assert clock.policy().call(fn, idempotent=False) == "done"  # type: ignore[arg-type]
    assert len(calls) == 3
