"""The launch lock on a real Prefect server: a live holder blocks, a dead one does not."""

from __future__ import annotations

import threading
import time
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.states import Running
from prefect.variables import Variable

from tminus.tasks.locks import (
    LEASE_SECONDS,
    LockLost,
    LockTimeout,
    holder_variable,
    launch_lock,
    lock_name,
)

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_a_live_holder_blocks_the_launch() -> None:
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with launch_lock("live-holder"):
            held.set()
            release.wait(20)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(20)
    try:
        started = time.monotonic()
        with pytest.raises(LockTimeout), launch_lock("live-holder", timeout=8):
            pass  # pragma: no cover - must not get here
        assert time.monotonic() - started >= 8  # beats kept it held past STALE_SECONDS
    finally:
        release.set()
        thread.join(20)
    with launch_lock("live-holder", timeout=5):  # released: free again at once
        pass


def test_a_holder_that_died_is_taken_over_within_seconds() -> None:
    """As after kill -9: the slot is taken under a lease that nobody renews, and the holder's
    run stays Running. The next run takes the lock in seconds and marks that run Crashed."""
    slug = "dead-holder"
    with get_client(sync_client=True) as client:
        with launch_lock(slug, timeout=5):  # creates the limit
            pass

        @flow(name="killed-launch")
        def killed() -> None:  # pragma: no cover - never run, only registered
            pass

        dead = client.create_flow_run(killed, state=Running())
        response = client.increment_concurrency_slots_with_lease(
            [lock_name(slug)], 1, "concurrency", LEASE_SECONDS
        )
        lease = response.json()["lease_id"]
        Variable.set(
            holder_variable(slug),
            {"run": str(dead.id), "lease": lease, "beat": time.time()},
            overwrite=True,
        )
    started = time.monotonic()
    with launch_lock(slug, timeout=60):
        waited = time.monotonic() - started
    assert waited < 10  # STALE_SECONDS of unchanged beats, on this machine's clock
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(str(dead.id))).state
    assert state is not None and state.type == StateType.CRASHED
    assert "holding the launch lock" in (state.message or "")


def test_a_holder_whose_lock_was_taken_over_stops() -> None:
    """A holder that was slow to beat and lost its lock learns it from Prefect before its
    next write, and stops."""
    with launch_lock("lost-holder", timeout=5) as lock:
        lock.check()  # held: fine
        lock.stop()  # as if it stopped beating long enough for a takeover
        with get_client(sync_client=True) as client:
            client.release_concurrency_slots_with_lease(lock.lease)  # what a taker does
        with pytest.raises(LockLost, match="another run took the launch lock over"):
            lock.check()


def test_two_waiters_never_both_take_over() -> None:
    """A dead holder and two runs waiting: exactly one of them gets the lock at a time."""
    slug = "two-waiters"
    with launch_lock(slug, timeout=5):
        pass
    with get_client(sync_client=True) as client:
        lease = client.increment_concurrency_slots_with_lease(
            [lock_name(slug)], 1, "concurrency", LEASE_SECONDS
        ).json()["lease_id"]
    Variable.set(
        holder_variable(slug), {"run": "", "lease": lease, "beat": time.time()}, overwrite=True
    )
    inside: list[int] = []
    overlaps: list[int] = []

    def waiter() -> None:
        with launch_lock(slug, timeout=60):
            inside.append(1)
            if len(inside) > 1:
                overlaps.append(1)
            time.sleep(1.5)
            inside.pop()

    threads = [threading.Thread(target=waiter) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert overlaps == []
