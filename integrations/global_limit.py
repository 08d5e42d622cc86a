"""A bound on calls in flight across every process and worker: one Prefect global concurrency
limit, one slot per call attempt.

GitLab's rate limit is per user (the token), not per process: ``TMINUS_GITLAB_CONCURRENCY``
bounds one run's requests, so N workers running launches at once send N times as many. With
``TMINUS_GITLAB_GLOBAL_LIMIT`` set, each GitLab attempt also holds a slot of the Prefect global
concurrency limit ``tminus-gitlab-api`` (created with that many slots, or set to it, at first
use), so all workers on one Prefect server share one bound.

Cheap on purpose: two requests to the Prefect API per attempt (take a slot with a lease,
release it) on one kept-alive client per process; no lease-renewal thread and no events (the
``prefect.concurrency.sync.concurrency`` helper adds a renewal request from a new thread and
client, and two events, per call: +64 ms against +9 ms here, ``benchmarks/gitlab_limit.py``).
Prefect's ``Retry-After`` on a full limit is sized for long tasks, so a waiter polls at most
every ``MAX_POLL_SECONDS`` instead. The lease outlives the longest attempt, so a worker that
dies holding a slot frees it when the lease expires, and a slot is never held across a retry
wait (``RetryPolicy`` calls each attempt separately).

Without a Prefect API (``PREFECT_API_URL`` unset: adapters in tests, scripts) or while Prefect
is unreachable, calls run under the in-process bound alone, with one warning; the global limit
is tried again after ``RETRY_PREFECT_SECONDS``. Prefect down stops no GitLab work; GitLab's own
429s (honoured by ``RetryPolicy``) remain the last line.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache
from typing import Any
from uuid import UUID

import httpx

log = logging.getLogger("tminus.global_limit")

MIN_LEASE_SECONDS = 60.0  # Prefect's shortest lease
RETRY_PREFECT_SECONDS = 30.0  # after Prefect failed, calls skip the global limit this long
MAX_POLL_SECONDS = 0.25  # longest wait between two tries for a slot (see `_acquire`)


class LimitBusy(Exception):
    """No slot came free within the wait allowed."""


class GlobalLimit:
    """``slots`` calls in flight at once across processes, as the Prefect global concurrency
    limit ``name``. ``hold(timeout)`` is a context manager around one call attempt."""

    def __init__(self, name: str, slots: int, lease_seconds: float = MIN_LEASE_SECONDS) -> None:
        self.name = name
        self.slots = slots
        self.lease_seconds = max(lease_seconds, MIN_LEASE_SECONDS)
        self._lock = threading.Lock()
        self._ensure_lock = threading.Lock()
        self._client: Any = None
        self._url: str | None = None
        self._ready = False
        self._skip_until = 0.0
        self._warned = False

    def close(self) -> None:
        """Close this process's Prefect client (the next call opens a new one)."""
        with self._lock:
            if self._client is not None:
                self._client.__exit__(None, None, None)
            self._client, self._url, self._ready = None, None, False

    # --- the Prefect side --------------------------------------------------------------

    def _api(self) -> Any:
        """The process's Prefect client, or None when no Prefect API is configured (a bare
        ``get_client`` would start a throwaway in-process server instead)."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
        if not url:
            return None
        with self._lock:
            if self._client is None or self._url != url:  # a new server: a new client
                if self._client is not None:
                    self._client.__exit__(None, None, None)
                client = get_client(sync_client=True)
                client.__enter__()
                self._client, self._url, self._ready = client, url, False
            return self._client

    def _ensure(self, client: Any) -> None:
        """Create the limit with ``slots``, or set an existing one to it (the setting wins)."""
        if self._ready:
            return
        from prefect.client.schemas.actions import (
            GlobalConcurrencyLimitCreate,
            GlobalConcurrencyLimitUpdate,
        )
        from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

        with self._ensure_lock:  # once per process, not once per thread
            if self._ready:
                return
            try:
                current = client.read_global_concurrency_limit_by_name(self.name)
            except ObjectNotFound:
                with suppress(ObjectAlreadyExists):  # another worker created it meanwhile
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=self.name, limit=self.slots)
                    )
            else:
                if current.limit != self.slots or not current.active:
                    log.warning(
                        "Setting the global concurrency limit %s to %d slots (was %d%s)",
                        self.name,
                        self.slots,
                        current.limit,
                        "" if current.active else ", inactive",
                    )
                    client.update_global_concurrency_limit(
                        self.name, GlobalConcurrencyLimitUpdate(limit=self.slots, active=True)
                    )
            self._ready = True

    def _acquire(self, client: Any, deadline: float) -> UUID:
        while True:
            try:
                response = client.increment_concurrency_slots_with_lease(
                    [self.name], 1, "concurrency", self.lease_seconds
                )
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 423:  # 423 Locked: every slot is taken
                    raise
                # Prefect's Retry-After is sized for long tasks (the limit's average
                # occupancy, starting at 2 s, times the denied requests): for GitLab calls of
                # a fraction of a second it cut throughput under contention to ~7 calls/s.
                # Poll at most every MAX_POLL_SECONDS instead.
                asked = float(exc.response.headers.get("Retry-After") or 0.1)
                wait = min(max(asked, 0.02), MAX_POLL_SECONDS) * random.uniform(0.8, 1.2)
                if time.monotonic() + wait > deadline:
                    raise LimitBusy(
                        f"all {self.slots} slots of the global limit {self.name} stayed taken"
                    ) from None
                time.sleep(wait)
                continue
            body = response.json()
            if not body.get("limits"):  # deleted meanwhile: create it again next time
                self._ready = False
                raise LookupError(f"the global concurrency limit {self.name} is gone")
            return UUID(body["lease_id"])

    def _release(self, client: Any, lease: UUID) -> None:
        try:
            client.release_concurrency_slots_with_lease(lease)
        except Exception as exc:  # the lease expires by itself
            log.warning("Could not release a slot of %s (%s); its lease expires", self.name, exc)

    def _unavailable(self, why: str) -> None:
        self._skip_until = time.monotonic() + RETRY_PREFECT_SECONDS
        if not self._warned:
            self._warned = True
            log.warning(
                "The global limit %s is not applied (%s); calls are bounded per process only",
                self.name,
                why,
            )

    @contextmanager
    def hold(self, timeout: float) -> Iterator[None]:
        """Hold one slot for the block; wait at most ``timeout`` seconds for it (then
        ``LimitBusy``). Without a reachable Prefect API the block runs without a slot."""
        lease = client = None
        if time.monotonic() >= self._skip_until:
            try:
                client = self._api()
                if client is None:
                    self._unavailable("no PREFECT_API_URL")
                else:
                    self._ensure(client)
                    lease = self._acquire(client, time.monotonic() + timeout)
                    self._warned = False
            except LimitBusy:
                raise
            except Exception as exc:  # Prefect down or refusing: never stop the GitLab call
                self._unavailable(f"Prefect: {type(exc).__name__}: {exc}")
        try:
            yield
        finally:
            if lease is not None:
                self._release(client, lease)


@lru_cache(maxsize=8)
def global_limit(name: str, slots: int, lease_seconds: float) -> GlobalLimit:
    """One ``GlobalLimit`` per process for these values: its Prefect client is shared by every
    adapter (and every thread) of the process."""
    return GlobalLimit(name, slots, lease_seconds)
