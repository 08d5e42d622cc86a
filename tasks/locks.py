"""One run at a time per launch, across processes and workers (a slot of a Prefect global
concurrency limit named after the launch).

Every write is checked against the external system by key, but two runs of the same launch
that overlap (a release `create` and its `update` seconds apart, a PMM clicking Run twice)
both look before either writes, and both create. The lock closes that window.

A run that dies holding the lock (``kill -9``, a lost machine) must not block its launch for
minutes. Prefect frees a slot only when its lease expires (60 s at the least, plus the
repossessor's loop), so the holder also beats: every ``BEAT_SECONDS`` a background thread
renews the lease and writes the time to a Prefect Variable naming the holder's flow run and
lease. A run waiting for the lock that sees no new beat for ``STALE_SECONDS`` releases that
lease itself (by its id), marks the dead holder's run Crashed, and takes the lock. A re-run
after a crash therefore starts within ~``STALE_SECONDS``.

Staleness is judged on the waiter's own clock (the beat unchanged for ``STALE_SECONDS`` over
several reads), never by comparing clocks of two machines; takeovers are serialised; and a
holder checks with Prefect that it still holds the lock before the writes that must not
overlap another run's (``LaunchLock.check``), and stops if it does not.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    VariableCreate,
    VariableUpdate,
)
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import Crashed
from prefect.variables import Variable

from tminus.errors import LockLost, LockTimeout

LOCK_WAIT_SECONDS = 1800.0
LEASE_SECONDS = 60.0  # Prefect's shortest lease; renewed at every beat
BEAT_SECONDS = 1.0
# A holder whose beat a waiter has seen unchanged this long, on the waiter's own clock and over
# at least MIN_LOOKS reads, is gone. A holder learns it lost the lock from Prefect (its lease
# is unknown, or the record names another lease), at a beat or when it checks before writing.
STALE_SECONDS = 6.0
MIN_LOOKS = 6
POLL_SECONDS = 0.5
log = logging.getLogger("tminus.locks")
T = TypeVar("T")


def lock_name(slug: str) -> str:
    return f"tminus-launch-{slug}"


def holder_variable(slug: str) -> str:
    # Variable names: lowercase letters, digits, dashes and underscores.
    return "tminus-lock-" + "".join(c if c.isalnum() else "-" for c in slug.lower())


def _ensure_limit(client: Any, name: str) -> None:
    try:
        client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        with suppress(ObjectAlreadyExists):  # another run created it meanwhile
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def _try_acquire(fast: Any, name: str, holder: ConcurrencyLeaseHolder | None) -> UUID | None:
    try:
        response = _when_not_busy(
            lambda: fast.increment_concurrency_slots_with_lease(
                [name], 1, "concurrency", LEASE_SECONDS, holder
            )
        )
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 423:  # Locked: the slot is taken
            return None
        raise
    return UUID(response.json()["lease_id"])


class _Watch:
    """What a waiter has seen of the holder's beat, on its own monotonic clock (the holder's
    clock may disagree with this machine's)."""

    def __init__(self) -> None:
        self.seen: Any = None
        self.since = time.monotonic()
        self.looks = 0

    def dead(self, record: Any) -> bool:
        if record != self.seen:
            self.seen, self.since, self.looks = record, time.monotonic(), 0
            return False
        self.looks += 1
        return (
            isinstance(record, dict)
            and bool(record.get("lease"))
            and self.looks >= MIN_LOOKS
            and time.monotonic() - self.since >= STALE_SECONDS
        )


def _take_over(
    client: Any,
    fast: Any,
    slug: str,
    stale: dict[str, Any],
    holder: ConcurrencyLeaseHolder | None,
) -> UUID | None:
    """Release a dead holder's lease and take the lock; None when another waiter is doing it or
    did it. Takeovers of one launch are serialised (a second limit), so two waiters can never
    both release the same dead lease and both get the lock."""
    takeover = f"{lock_name(slug)}-takeover"
    _ensure_limit(client, takeover)
    guard = _try_acquire(fast, takeover, holder)
    if guard is None:
        return None
    try:
        if Variable.get(holder_variable(slug), default=None) != stale:
            return None  # the lock changed hands meanwhile
        dead = UUID(stale["lease"])
        _when_not_busy(lambda: fast.release_concurrency_slots_with_lease(dead))
        lease = _try_acquire(fast, lock_name(slug), holder)
        if lease is None:
            return None
        log.warning("The run holding launch %s stopped beating; took its lock over", slug)
        try:
            _record(fast, slug, lease, holder and str(holder.id))
        except BaseException:  # not held after all: free the slot rather than orphan it
            with suppress(Exception):
                _when_not_busy(lambda: fast.release_concurrency_slots_with_lease(lease))
            raise
        _crash(client, stale.get("run"))
        return lease
    finally:
        _when_not_busy(lambda: fast.release_concurrency_slots_with_lease(guard))


def _crash(client: Any, run_id: str | None) -> None:
    """Mark the dead holder's run Crashed; best effort: the lock is taken either way."""
    if not run_id:
        return
    try:
        _mark_crashed(client, run_id)
    except Exception as exc:
        log.warning("Could not mark the dead holder's run %s Crashed: %s", run_id, exc)


def _mark_crashed(client: Any, run_id: str) -> None:
    with suppress(ObjectNotFound, ValueError):
        run = client.read_flow_run(UUID(run_id))
        if run.state is not None and not run.state.is_final() and not run.state.is_paused():
            client.set_flow_run_state(
                run.id,
                Crashed(
                    message="It stopped beating while holding the launch lock (its process "
                    "died, or lost Prefect); a later run of the launch took over."
                ),
                force=True,
            )


class PrefectBusy(httpx.HTTPStatusError):
    """Prefect answered 503 (busy), raised by the lock's own client instead of sleeping. An
    ``HTTPStatusError``, as Prefect's client raises once its retries are spent: callers see
    the same error as before when ``_when_not_busy`` gives up."""


def _fail_when_busy(response: httpx.Response) -> None:
    if response.status_code == 503:
        raise PrefectBusy(
            f"Prefect answered {response.request.method} {response.request.url.path} 503 (busy)",
            request=response.request,
            response=response,
        )


# The lock's writes (its slot, its record) go through a client that fails at once on 503: an
# httpx response hook runs inside each attempt of Prefect's client, before its retry loop looks
# at the answer. A SQLite Prefect server answers writes 503 ("database is locked") while it
# records a burst of task runs, and Prefect's client then sleeps 2 s, 4 s, ... 32 s, even with
# its retries set to 0 (measured: launches ended 1.5-1.8 s later on 5 of 5 runs, one waited
# 64 s). The lock retries these itself, sooner.
_FAIL_WHEN_BUSY: dict[str, Any] = {"event_hooks": {"response": [_fail_when_busy]}}
# Longer than Prefect's own retries (2+4+8+16+32 s of sleep): a SQLite server can hold every
# write for its 60 s busy timeout, then answer 503.
BUSY_RETRY_SECONDS = 150.0


def _record_value(lease: UUID, run_id: str | None) -> dict[str, Any]:
    return {"run": run_id or "", "lease": str(lease), "beat": time.time()}


def _when_not_busy(call: Callable[[], T]) -> T:
    """``call`` (a write on the lock's fail-fast client), tried again while Prefect answers it
    503: a busy answer clears as soon as the server's other write commits (a 503 wrote
    nothing), so after 0.05 s, doubling to 1 s, for ``BUSY_RETRY_SECONDS`` in all."""
    deadline, pause = time.monotonic() + BUSY_RETRY_SECONDS, 0.05
    while True:
        try:
            return call()
        except PrefectBusy:
            if time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def _record(fast: Any, slug: str, lease: UUID, run_id: str | None) -> None:
    """Write the holder's record on the lock's fail-fast client."""
    _when_not_busy(lambda: _beat_record(fast, slug, lease, run_id))


def _beat_record(client: Any, slug: str, lease: UUID, run_id: str | None) -> None:
    """Write the holder's record on an open client: one PATCH (one POST for a new launch)."""
    name = holder_variable(slug)
    try:
        client.update_variable(VariableUpdate(name=name, value=_record_value(lease, run_id)))
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code != 404:
            raise
        try:
            client.create_variable(VariableCreate(name=name, value=_record_value(lease, run_id)))
        except ObjectAlreadyExists:  # created meanwhile (a takeover's record): ours is newer
            client.update_variable(VariableUpdate(name=name, value=_record_value(lease, run_id)))


class LaunchLock:
    """A held launch lock. ``check()`` raises ``LockLost`` once the lock cannot be trusted."""

    def __init__(self, slug: str, lease: UUID, run_id: str | None, fast: Any) -> None:
        # The run's id is read here: the beat thread does not see the flow run's context.
        self.slug, self.lease, self.run_id = slug, lease, run_id
        self._fast = fast  # the lock's fail-fast client (its beat writes on it)
        self.lost: str | None = None
        self._stop = threading.Event()
        # In the caller's context: the same Prefect server (and settings) as the flow, even when
        # they are set in context rather than in the environment (tests, embedding programs).
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._beat,), name=f"lock-{slug}", daemon=True
        )

    def check(self) -> None:
        """Raise ``LockLost`` unless Prefect confirms, now, that this run holds the lock: its
        lease renews. That is the proof: a takeover always releases the lease of the holder it
        replaces (the record is not: a beat of the previous holder that Prefect answered late
        can still name its freed lease). Call before a write that must not overlap another
        run's (slow answers only make this slower; they never fail it)."""
        if not self.lost:
            try:
                with get_client(sync_client=True) as client:
                    self._renew(client)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code not in (404, 410):
                    raise
        if self.lost:
            raise LockLost(f"launch {self.slug}: {self.lost}; run the launch again")

    def _renew(self, client: Any) -> None:
        try:
            client.renew_concurrency_lease(self.lease, LEASE_SECONDS)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (404, 410):
                self.lost = "another run took the launch lock over"
            raise

    def _beat(self) -> None:
        # On 503 the next beat is the retry: ``stop`` waits for the beat.
        client = self._fast
        while not self._stop.wait(BEAT_SECONDS):
            try:
                self._renew(client)
                if self._stop.is_set():
                    return  # released meanwhile: a late record would name a freed lease
                _beat_record(client, self.slug, self.lease, self.run_id)
            except PrefectBusy as exc:  # expected now and then; a lease lasts 60 s
                log.debug("Could not renew the launch lock: %s", exc)
            except Exception as exc:
                if self.lost or self._stop.is_set():
                    return  # lost, or released meanwhile (its client may be closed)
                log.warning("Could not renew the launch lock: %s", exc)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # not started when writing the record failed
            self._thread.join(timeout=BEAT_SECONDS * 4)


@contextmanager
def launch_lock(slug: str, timeout: float = LOCK_WAIT_SECONDS) -> Iterator[LaunchLock]:
    """Hold the launch's lock; a second run of the same launch waits here."""
    name, variable = lock_name(slug), holder_variable(slug)
    run_id = flow_run.id
    holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(run_id)) if run_id else None
    deadline = time.monotonic() + timeout
    watch = _Watch()
    # One fail-fast client for the lock's life (each Prefect client builds its TLS context:
    # tens of ms of CPU): the record, the beat, the release.
    with (
        get_client(sync_client=True) as client,
        get_client(sync_client=True, httpx_settings=_FAIL_WHEN_BUSY) as fast,
    ):
        _ensure_limit(client, name)
        while (lease := _try_acquire(fast, name, holder)) is None:
            record = Variable.get(variable, default=None)
            if (
                isinstance(record, dict)
                and watch.dead(record)
                and (lease := _take_over(client, fast, slug, record, holder))
            ):
                break
            if time.monotonic() > deadline:
                raise LockTimeout(f"launch {slug} stayed locked by another run for {timeout:.0f}s")
            time.sleep(POLL_SECONDS)
        lock = LaunchLock(slug, lease, run_id, fast)
        try:
            _record(fast, slug, lease, run_id)
            lock.start()
            yield lock
        finally:
            lock.stop()
            try:
                _when_not_busy(lambda: fast.release_concurrency_slots_with_lease(lease))
            except Exception as exc:  # the lease expires by itself; a waiter takes over
                log.warning("Could not release the launch lock of %s: %s", slug, exc)
            else:
                if not lock.lost:  # a lost lock's record names the run that took it over
                    _clear_record(fast, variable)


def _clear_record(fast: Any, variable: str) -> None:
    """Empty the holder's record once its lease is released, or leave it when Prefect is busy
    (rather than wait 2 s for the client's retry at the end of every launch): a record naming a
    released lease misleads no one. A waiter first tries the free slot, and a new holder
    writes its own record as soon as it holds the lock."""
    try:
        fast.update_variable(VariableUpdate(name=variable, value={}))
    except (PrefectBusy, httpx.HTTPStatusError) as exc:
        log.debug("Left the launch lock's record %s: %s", variable, exc)
