"""The sales channel port's contract: the same tests against the in-memory fake and against the
Slack adapter over real HTTP to the stand-in. A message is either delivered exactly as built,
once, or refused with a ``PermanentError`` and not delivered at all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tminus.domain.request import LaunchRequest
from tminus.errors import PermanentError
from tminus.integrations.retry import RetryPolicy
from tminus.integrations.slack import SalesChannel, SlackNotifier
from tminus.integrations.slack_blocks import sales_message
from tminus.integrations.slack_memory import MemoryChannel

from ..conftest import SandboxClient

Delivered = Callable[[], list[dict[str, Any]]]


@pytest.fixture(params=["memory", "slack"])
def channel(request: pytest.FixtureRequest) -> Iterator[tuple[SalesChannel, Delivered]]:
    if request.param == "memory":
        memory = MemoryChannel()
        yield memory, lambda: memory.messages
        return
    sandbox: SandboxClient = request.getfixturevalue("sandbox")
    notifier = SlackNotifier(f"{sandbox.url}/slack/webhook/sales", retry=RetryPolicy(backoff=0.01))

    def delivered() -> list[dict[str, Any]]:
        rows = sandbox.http.get("/slack/messages").json()
        return [row["payload"] for row in rows]

    yield notifier, delivered


def test_a_message_is_delivered_once_as_built(
    channel: tuple[SalesChannel, Delivered], l1: LaunchRequest
) -> None:
    port, delivered = channel
    payload = sales_message(l1, tracking_url="https://example.test/1", features_url=None)
    port.post(payload)
    assert delivered() == [payload]


def test_a_message_slack_refuses_is_not_delivered(
    channel: tuple[SalesChannel, Delivered],
) -> None:
    port, delivered = channel
    too_many = {"text": "x", "blocks": [{"type": "divider"}] * 51}
    with pytest.raises(PermanentError) as info:
        port.post(too_many)
    assert info.value.status == 400 and "invalid_blocks" in str(info.value)
    with pytest.raises(PermanentError):
        port.post({"text": "", "blocks": []})
    assert delivered() == []


def test_a_long_kit_stays_within_slack_limits(
    channel: tuple[SalesChannel, Delivered], l1: LaunchRequest
) -> None:
    """The message builder keeps any launch within the limits both sides enforce."""
    port, delivered = channel
    wide = l1.model_copy(update={"title": "T" * 400, "features": list(l1.features) * 20})
    port.post(sales_message(wide, tracking_url=None, features_url=None))
    assert len(delivered()) == 1
