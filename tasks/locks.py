"""One run at a time per launch, across processes and workers (a slot of a Prefect global
concurrency limit named after the launch).

Every write is checked against the external system by key, but two runs of the same launch
that overlap (a release `create` and its `update` seconds apart, a PMM clicking Run twice)
both look before either writes, and both create. The lock closes that window.

A run that dies holding the lock (``kill -9``, a lost machine) must not block its launch for
minutes. Prefect frees a slot only when its lease expires (60 s at the least, plus the
repossessor's loop), so the holder also beats: every ``BEAT_SECONDS`` a background thread
renews the lease and writes the time to a Prefect Variable naming the holder's flow run and
lease. A run waiting for the lock that sees no beat for ``STALE_SECONDS`` releases that lease
itself (by its id: releasing twice is harmless), marks the dead holder's run Crashed, and takes
the lock. A re-run after a crash therefore starts within ~``STALE_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import Crashed
from prefect.variables import Variable

LOCK_WAIT_SECONDS = 1800.0
LEASE_SECONDS = 60.0  # Prefect's shortest lease; renewed at every beat
BEAT_SECONDS = 1.5
STALE_SECONDS = 6.0  # four missed beats: the holder is gone
POLL_SECONDS = 0.5
log = logging.getLogger("tminus.locks")


class LockTimeout(TimeoutError):
    """The launch stayed locked by a live run for the whole wait."""


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


def _try_acquire(client: Any, name: str, holder: ConcurrencyLeaseHolder | None) -> UUID | None:
    try:
        response = client.increment_concurrency_slots_with_lease(
            [name], 1, "concurrency", LEASE_SECONDS, holder
        )
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 423:  # Locked: the slot is taken
            return None
        raise
    return UUID(response.json()["lease_id"])


def _take_over_if_dead(client: Any, variable: str) -> bool:
    """Free the lock of a holder that stopped beating; True when it did."""
    record = Variable.get(variable, default=None)
    if not isinstance(record, dict) or not record.get("lease"):
        return False
    if time.time() - float(record.get("beat", 0)) < STALE_SECONDS:
        return False
    client.release_concurrency_slots_with_lease(UUID(record["lease"]))
    log.warning("The run holding the launch lock stopped (no beat for %.0fs)", STALE_SECONDS)
    run_id = record.get("run")
    if run_id:
        with suppress(ObjectNotFound, ValueError):
            run = client.read_flow_run(UUID(run_id))
            if run.state is not None and not run.state.is_final():
                client.set_flow_run_state(
                    run.id,
                    Crashed(
                        message="Its process stopped while holding the launch lock; a later "
                        "run of the launch took over."
                    ),
                    force=True,
                )
    return True


@contextmanager
def launch_lock(slug: str, timeout: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold the launch's lock; a second run of the same launch waits here."""
    name, variable = lock_name(slug), holder_variable(slug)
    run_id = flow_run.id
    holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(run_id)) if run_id else None
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        _ensure_limit(client, name)
        while (lease := _try_acquire(client, name, holder)) is None:
            if _take_over_if_dead(client, variable):
                continue
            if time.monotonic() > deadline:
                raise LockTimeout(f"launch {slug} stayed locked by another run for {timeout:.0f}s")
            time.sleep(POLL_SECONDS)

    def beat() -> None:
        Variable.set(
            variable,
            {"run": run_id or "", "lease": str(lease), "beat": time.time()},
            overwrite=True,
        )

    stop = threading.Event()

    def beating() -> None:
        with get_client(sync_client=True) as client:
            while not stop.wait(BEAT_SECONDS):
                try:
                    client.renew_concurrency_lease(lease, LEASE_SECONDS)
                    beat()
                except Exception as exc:  # keep beating: one failed beat is not a lost lock
                    log.warning("Could not renew the launch lock: %s", exc)

    beat()
    thread = threading.Thread(target=beating, name=f"lock-{slug}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        with get_client(sync_client=True) as client:
            client.release_concurrency_slots_with_lease(lease)
        with suppress(Exception):  # a stale record names a released lease: harmless
            Variable.set(variable, {}, overwrite=True)
