"""The one retry owner of every call tminus makes to GitLab, Google Calendar and Slack.

Client libraries retry on their own (python-gitlab up to 10 times per request, Calendar's
``execute(num_retries=...)``), and Prefect retries tasks; stacked, an unreachable GitLab took
11 minutes to fail. So the libraries are built with their retries off, tasks that call an
adapter have no Prefect retries, and each adapter runs every call through a ``RetryPolicy``:

- bounded: a few attempts *and* a deadline per call, so an unreachable service fails in well
  under a minute with a message naming it;
- exponential backoff with jitter, or the wait the service asked for (``Retry-After``),
  whichever is longer, never past the deadline;
- only ``TransientError`` is retried; ``PermanentError`` (401, 403, 404, 422) fails at once;
- a write whose answer was lost (``TransientError.sent``) is re-sent only when repeating it is
  harmless (``idempotent``), or after ``recover`` looked it up and did not find it; a write
  that can be neither repeated nor looked up raises ``MaybeSentError`` for a person to check.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tminus.errors import MaybeSentError, TransientError
from tminus.settings import Settings

T = TypeVar("T")
log = logging.getLogger("tminus.retry")


def parse_retry_after(value: object) -> float | None:
    """A ``Retry-After`` header as seconds: integer seconds or an HTTP date; None if absent or
    unreadable."""
    text = str(value or "").strip()
    if text.isdigit():
        return float(text)
    if text:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(text).timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How one call is retried. ``sleep`` and ``clock`` are replaceable for tests."""

    # 8 attempts: at 30% failing answers one call still fails only once in ~15,000.
    attempts: int = 8
    backoff: float = 0.5  # first wait; doubles each attempt
    max_wait: float = 8.0  # longest backoff wait (a longer Retry-After is honoured)
    # No attempt starts after this many seconds of one call: with a 5 s connect timeout and a
    # 15 s read timeout, a call to a service that is down fails within ~60 s.
    deadline: float = 40.0
    jitter: float = 0.25  # up to this share of a wait is added at random
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def wait_before(self, attempt: int, error: TransientError) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1): the
        backoff (at most ``max_wait``), or the wait the system asked for if that is longer
        (a call that would outlive its deadline gives up instead)."""
        wait = min(self.backoff * 2 ** (attempt - 1), self.max_wait)
        wait += random.uniform(0, wait * self.jitter)
        if error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return wait

    def call(
        self,
        fn: Callable[[], T],
        *,
        idempotent: bool = True,
        recover: Callable[[], T | None] | None = None,
    ) -> T:
        """Run ``fn`` until it succeeds, fails permanently, or the attempts or deadline run out.

        ``idempotent``: repeating ``fn`` after a lost answer is harmless (reads, updates,
        creates the system refuses to repeat). Otherwise, after a lost answer, ``recover``
        (if given) looks the result up and its answer is returned when found; without
        ``recover`` a lost answer raises ``MaybeSentError``.
        """
        start = self.clock()
        attempt = 1
        while True:
            try:
                return fn()
            except MaybeSentError:
                raise  # a doubt is for a person, never for another attempt
            except TransientError as exc:
                error = exc
            lost = error.sent and not idempotent
            if lost and recover is None:
                raise MaybeSentError(
                    error.system,
                    f"{error.message}; the request may have been carried out, so it was not "
                    "sent again",
                    status=error.status,
                    resource=error.resource,
                ) from error
            wait = self.wait_before(attempt, error)
            elapsed = self.clock() - start
            if attempt >= self.attempts or elapsed + wait > self.deadline:
                asked = (
                    f" (asked to wait {error.retry_after:g}s)"
                    if error.retry_after is not None and elapsed + wait > self.deadline
                    else ""
                )
                if attempt == 1 and not asked:
                    raise error
                raise TransientError(
                    error.system,
                    f"{error.message}; gave up after {attempt} attempt"
                    f"{'s' if attempt > 1 else ''} in {elapsed:.0f}s{asked}",
                    status=error.status,
                    resource=error.resource,
                    retry_after=error.retry_after,
                    sent=error.sent,
                ) from error
            log.warning(
                "%s: attempt %d of %d failed, retrying in %.1fs",
                error,
                attempt,
                self.attempts,
                wait,
            )
            self.sleep(wait)
            attempt += 1
            if lost and recover is not None:
                found = recover()
                if found is not None:
                    return found


def retry_policy(settings: Settings) -> RetryPolicy:
    """The policy the settings describe (``TMINUS_RETRY_*``)."""
    return RetryPolicy(
        attempts=settings.retry_attempts,
        backoff=settings.retry_backoff,
        deadline=settings.retry_deadline,
    )
