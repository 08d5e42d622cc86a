"""The launch lock on a real Prefect server: a live holder blocks, a dead one does not."""

from __future__ import annotations

import json
import threading
import time
from uuid import UUID

import httpx
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import VariableUpdate
from prefect.client.schemas.objects import StateType
from prefect.states import Running
from prefect.variables import Variable

from tminus.errors import LockLost, LockTimeout
from tminus.tasks.locks import (
    _FAIL_WHEN_BUSY,
    LEASE_SECONDS,
    PrefectBusy,
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


def test_a_busy_prefect_fails_the_beat_at_once_instead_of_sleeping_to_retry() -> None:
    """Prefect's client sleeps 2 s before retrying a 503 (a SQLite server answers writes 503
    while it records a burst of task runs); releasing the lock waits for the beat, so the beat's
    requests fail at once and the next beat is the retry."""
    calls: list[str] = []

    def busy(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if request.url.path.endswith("/csrf-token"):  # as a server without CSRF protection
            return httpx.Response(422, json={"detail": "CSRF protection is disabled."})
        return httpx.Response(503, json={"exception_message": "Service Unavailable"})

    settings = {**_FAIL_WHEN_BUSY, "transport": httpx.MockTransport(busy)}
    started = time.monotonic()
    with (
        get_client(sync_client=True, httpx_settings=settings) as client,
        pytest.raises(PrefectBusy),
    ):
        client.update_variable(VariableUpdate(name="tminus-launch-busy-holder", value={}))
    assert time.monotonic() - started < 1.0 and calls.count("PATCH") == 1


def test_releasing_leaves_the_record_when_prefect_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The record of a released lease is only emptied when Prefect answers at once; a busy
    answer leaves it (it names a freed lease, which no waiter mistakes for a holder)."""
    import tminus.tasks.locks as locks

    slug = "busy-release"
    busy = BusyRecords(clears_only=True)
    monkeypatch.setattr(locks, "_FAIL_WHEN_BUSY", {**_FAIL_WHEN_BUSY, "transport": busy})
    started = time.monotonic()
    with launch_lock(slug, timeout=5) as lock:
        lease = str(lock.lease)
    assert time.monotonic() - started < 5
    assert busy.refused >= 1
    assert Variable.get(holder_variable(slug), default=None)["lease"] == lease
    with launch_lock(slug, timeout=5):  # the slot is free: taken at once despite the record
        pass


def test_a_busy_prefect_delays_taking_the_lock_by_fractions_of_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The holder's record is written again after 0.05 s, 0.1 s, ... (not Prefect's 2 s, 4 s,
    ... 32 s), so three busy answers in a row cost well under a second."""
    import tminus.tasks.locks as locks

    busy = BusyRecords(times=3)
    monkeypatch.setattr(locks, "_FAIL_WHEN_BUSY", {**_FAIL_WHEN_BUSY, "transport": busy})
    started = time.monotonic()
    with launch_lock("busy-take", timeout=5) as lock:
        took = time.monotonic() - started
        record = Variable.get(holder_variable("busy-take"), default=None)
        assert record["lease"] == str(lock.lease)
    assert busy.refused == 3 and took < 1.5


class BusyRecords(httpx.HTTPTransport):
    """Answers PATCHes of a lock record 503 without passing them on (the first ``times``, or
    those that empty it), as a busy SQLite Prefect server does; the rest go to the server."""

    def __init__(self, times: int | None = None, clears_only: bool = False) -> None:
        super().__init__()
        self.times, self.clears_only, self.refused = times, clears_only, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if (
            request.method == "PATCH"
            and "/variables/" in request.url.path
            and (self.times is None or self.refused < self.times)
            and (not self.clears_only or json.loads(request.content).get("value") == {})
        ):
            self.refused += 1
            return httpx.Response(503, json={"exception_message": "Service Unavailable"})
        return super().handle_request(request)
