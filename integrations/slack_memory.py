"""An in-memory sales channel: the ``SalesChannel`` port without Slack.

It keeps every message it accepted and refuses what Slack refuses where tminus could get it
wrong (no text, more than 50 blocks, a header over 150 characters): the contract tests
(``tests/contract/test_sales_channel_port.py``) hold it and the Slack adapter to the same
promises.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from tminus.errors import PermanentError
from tminus.integrations.slack_blocks import HEADER_LIMIT, MAX_BLOCKS

SYSTEM = "Slack (in memory)"


class MemoryChannel:
    """``SalesChannel`` in memory: ``messages`` holds what was posted, oldest first."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def post(self, payload: dict[str, Any]) -> None:
        blocks = payload.get("blocks") or []
        headers = [b for b in blocks if isinstance(b, dict) and b.get("type") == "header"]
        if not payload.get("text") and not blocks:
            raise PermanentError(SYSTEM, "no_text: give the message a text", status=400)
        if len(blocks) > MAX_BLOCKS or any(
            not 0 < len(h.get("text", {}).get("text", "")) <= HEADER_LIMIT for h in headers
        ):
            raise PermanentError(SYSTEM, "invalid_blocks: keep within Slack's limits", status=400)
        with self._lock:
            self.messages.append(copy.deepcopy(payload))
