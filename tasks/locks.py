"""One run at a time per launch, across processes and workers (a Prefect global
concurrency limit named after the launch).

Every write is checked against the external system by key, but two runs of the same launch
that overlap (a release `create` and its `update` seconds apart, a PMM clicking Run twice)
both look before either writes, and both create. The lock closes that window.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

LOCK_WAIT_SECONDS = 1800.0


def lock_name(slug: str) -> str:
    return f"tminus-launch-{slug}"


def _ensure_limit(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another run created it meanwhile
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )


@contextmanager
def launch_lock(slug: str, timeout: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold the launch's lock; a second run of the same launch waits here."""
    name = lock_name(slug)
    _ensure_limit(name)
    with concurrency(name, occupy=1, timeout_seconds=timeout, strict=True):
        yield
