"""Every error tminus raises on purpose, in one tree.

::

    TminusError                      base; ``str()`` is the message a user sees
    ├── LaunchIncomplete             a launch ran, some of its actions failed (carries the report)
    ├── LockTimeout                  another live run kept the launch locked for the whole wait
    ├── LockLost                     this run lost its launch lock; it stopped writing
    ├── ServiceError                 a local service (Prefect server, stand-ins) did not come up
    ├── InputError                   bad input, found before any side effect
    │   ├── LaunchFileError          a launch file (or UI form) that does not validate
    │   ├── PlaybookError            a playbook that does not validate
    │   └── SettingsError            an environment variable or setting that does not validate
    └── IntegrationError             an external system refused or failed (system, status, resource)
        ├── TransientError           worth retrying: 429, 5xx, timeouts, connection errors
        │   └── MaybeSentError       a write whose answer was lost and that must not be re-sent
        └── PermanentError           retrying will not help: 401, 403, 404, 422, ...

Vendor exceptions are translated at the adapter boundary (``raise ... from exc``) so flows and
tasks only ever see this tree; ``TransientError`` is what the retry policy
(``integrations.retry``) retries, except ``MaybeSentError``, which nothing retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tminus.domain.report import LaunchReport


class TminusError(Exception):
    """Base of every error tminus raises on purpose."""


class LaunchIncomplete(TminusError):
    """Some of a launch's actions failed; the others were done. Carries the whole report."""

    def __init__(self, report: LaunchReport) -> None:
        self.report = report
        failed = report.failed
        lines = "\n".join(f"  - {r.title}: {r.detail}" for r in failed)
        super().__init__(f"{len(failed)} of {len(report.results)} actions failed:\n{lines}")

    def __reduce__(self) -> tuple[type[LaunchIncomplete], tuple[LaunchReport]]:
        # Prefect keeps a failed run's exception as its result: keep the report with it.
        return (LaunchIncomplete, (self.report,))


class LockTimeout(TminusError, TimeoutError):
    """The launch stayed locked by a live run for the whole wait."""


class LockLost(TminusError):
    """This run could not keep its launch lock (Prefect unreachable, or another run took it
    over): it stops before writing anything more."""


class ServiceError(TminusError):
    """A local service tminus starts (the Prefect server, the stand-ins, the runner) did not
    come up in time; the message names its log."""


class InputError(TminusError):
    """Input that cannot be used; raised before anything is written anywhere."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} is not valid:\n{lines}")


class LaunchFileError(InputError):
    """A launch request (file, form or webhook) that does not validate."""


class PlaybookError(InputError):
    """A playbook file that does not validate."""


class SettingsError(InputError):
    """Settings (environment variables) that do not validate."""


class IntegrationError(TminusError):
    """An external system failed or refused a request."""

    def __init__(
        self,
        system: str,
        message: str,
        *,
        status: int | None = None,
        resource: str | None = None,
    ) -> None:
        self.system = system
        self.status = status
        self.resource = resource
        self.message = message
        where = f" {resource}" if resource else ""
        code = f" ({status})" if status is not None else ""
        super().__init__(f"{system}{where}{code}: {message}")


class TransientError(IntegrationError):
    """A failure that may pass: rate limits, server errors, timeouts, dropped connections.

    ``retry_after`` is the wait the system asked for (``Retry-After``), if any. ``sent`` says
    whether the request may have reached the system and been acted on: ``False`` when it
    surely was not (the connection was refused, a 429), ``True`` when the answer was lost
    after sending (a 5xx from a proxy, a read timeout). The retry owner
    (``integrations.retry``) re-sends a write only when ``sent`` is false or the write is
    idempotent; otherwise it looks the result up first.
    """

    def __init__(
        self,
        system: str,
        message: str,
        *,
        status: int | None = None,
        resource: str | None = None,
        retry_after: float | None = None,
        sent: bool = True,
    ) -> None:
        super().__init__(system, message, status=status, resource=resource)
        self.retry_after = retry_after
        self.sent = sent


class MaybeSentError(TransientError):
    """A write that cannot be looked up (a Slack message) may or may not have happened.

    Nothing retries it: a person checks (the message says where) and decides.
    """


class PermanentError(IntegrationError):
    """A failure retrying will not fix: bad credentials, missing project, rejected data."""


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying (used as a Prefect ``retry_condition_fn``)."""
    return isinstance(exc, TransientError)
