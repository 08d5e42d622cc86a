"""Every hidden marker tminus writes into GitLab, in one place.

GitLab has no field for "this issue is launch X's activity Y", so tminus leaves HTML comments
(invisible in rendered markdown) in what it writes, and finds its work again by them. They are
part of the stored data: changing one orphans what earlier runs wrote.
"""

from __future__ import annotations

import re

PREFIX = "tminus:"

# An issue's key, at the end of its managed description: "<!-- tminus:key=slug/... -->".
KEY = f"{PREFIX}key="
KEY_PATTERN = re.compile(r"<!-- tminus:key=([a-z0-9/-]+)\b[^>]*-->")
# The launch request, base64 JSON, in the tracking issue (the audit re-plans from it).
REQUEST = f"{PREFIX}request"
REQUEST_PATTERN = re.compile(r"<!-- tminus:request ([A-Za-z0-9_=-]+) -->")
# The sales note on the tracking issue: what sales was told, or a message in flight.
SALES = f"<!-- {PREFIX}sales-"  # both below start with it: finds the sales note
SALES_SENT = f"{PREFIX}sales-notified"
SALES_PENDING = f"{PREFIX}sales-pending"
SALES_SENT_PATTERN = re.compile(r"<!-- tminus:sales-notified (\{[^\n]*?\}) -->")
SALES_PENDING_PATTERN = re.compile(r"<!-- tminus:sales-pending (\{[^\n]*?\}) -->")
# Notes the audit and a cancellation leave on the tracking issue.
AUDIT = f"{PREFIX}audit"
REMINDER = f"{PREFIX}reminder"
CANCELLED = f"{PREFIX}cancelled"
# The note the audit leaves on a tracking issue it closes (its retrospective closed).
DONE = f"{PREFIX}launch-done"


def comment(marker: str, data: str = "") -> str:
    """The marker as a hidden HTML comment."""
    return f"<!-- {marker} {data} -->" if data else f"<!-- {marker} -->"
