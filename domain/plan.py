"""What a launch needs, as data: the planner's output and the reconciler's input.

Every planned item carries a stable ``key`` made of the launch slug, the item's kind and its
name (``duo-chat/activity/blog-post``). The same request, playbook and day always give the same
plan; keys never depend on titles, dates or tiers, so a renamed or moved launch updates its
issues instead of creating new ones.
"""

from __future__ import annotations

import base64
import re
from datetime import date
from enum import Enum

from pydantic import BaseModel, ConfigDict

from tminus.domain import markers
from tminus.domain.request import LaunchRequest

# The reconciler replaces these with real issue references (#12) once the issues exist.
REF_PATTERN = re.compile(r"\[\[ref:([a-z0-9/-]+)\]\]")


# Where a description lists the launch's late work; filled from what GitLab has when the
# issue is written (``tminus.domain.retro``), as refs are.
LATE_WORK = "[[late-work]]"


def ref_placeholder(key: str) -> str:
    return f"[[ref:{key}]]"


class IssueRole(str, Enum):
    tracking = "tracking"
    activity = "activity"
    sister = "sister"


class IssueSpec(BaseModel):
    """An issue as it should be. Only the managed part of the description is described."""

    model_config = ConfigDict(frozen=True)

    key: str
    role: IssueRole
    title: str
    description: str
    labels: tuple[str, ...]
    due_date: date | None
    assignee: str | None
    activity_key: str | None = None
    overdue: bool = False
    depends_on: tuple[str, ...] = ()  # keys of the issues this one waits for
    # A sister issue's questions, and the answer form people's part starts with (below the
    # key marker; never rewritten, only completed with the questions it lacks).
    questions: tuple[str, ...] = ()
    answer_form: str = ""


class CalendarSpec(BaseModel):
    """An all-day entry on the marketing launch calendar."""

    model_config = ConfigDict(frozen=True)

    key: str
    activity_key: str
    title: str
    description: str
    day: date
    invite_sales: bool = False  # the sales channel's address is an attendee (the training)


class CheckSpec(BaseModel):
    """A page check: the pages that must mention the launch's priority features."""

    model_config = ConfigDict(frozen=True)

    key: str
    activity_key: str
    title: str
    due_date: date
    overdue: bool = False


class NotificationSpec(BaseModel):
    """The sales notification: one message per launch, corrections when it changes."""

    model_config = ConfigDict(frozen=True)

    key: str
    activity_key: str
    title: str
    due_date: date
    needs_approval: bool
    overdue: bool = False
    # Sales kit field -> the sister issue question whose answer fills it when the launch
    # file leaves the field empty (``domain.answers.fill_kit``).
    kit: dict[str, str] = {}


class Plan(BaseModel):
    """Everything one launch asks for, on one day."""

    model_config = ConfigDict(frozen=True)

    request: LaunchRequest
    playbook: str
    today: date
    tracking: IssueSpec
    issues: tuple[IssueSpec, ...]
    calendar: tuple[CalendarSpec, ...]
    checks: tuple[CheckSpec, ...]
    notification: NotificationSpec | None
    warnings: tuple[str, ...]

    @property
    def all_issues(self) -> tuple[IssueSpec, ...]:
        """Tracking issue last: its checklist links to the others."""
        return (*self.issues, self.tracking)

    @property
    def launch_marker(self) -> str:
        """A token found in the description of every issue of this launch, and only there."""
        return key_marker_prefix(self.request.slug)

    def labels(self) -> list[str]:
        """Every label any issue of this plan uses, in a stable order."""
        seen: dict[str, None] = {}
        for spec in self.all_issues:
            for label in spec.labels:
                seen.setdefault(label, None)
        return list(seen)


def key_marker_prefix(slug: str) -> str:
    return f"{markers.KEY}{slug}/"


def key_marker(key: str) -> str:
    """The hidden line that ties an issue to its key; searched for in GitLab."""
    return (
        f"<!-- {markers.KEY}{key} (managed by tminus: text above this line is rewritten on "
        "each run; write your own notes below it) -->"
    )


KEY_MARKER_PATTERN = markers.KEY_PATTERN
REQUEST_MARKER_PATTERN = markers.REQUEST_PATTERN


def request_marker(request: LaunchRequest) -> str:
    """The launch request, hidden in the tracking issue so the audit can re-plan the launch."""
    data = base64.urlsafe_b64encode(request.model_dump_json().encode()).decode()
    return markers.comment(markers.REQUEST, data)


def request_from_description(description: str) -> LaunchRequest | None:
    match = REQUEST_MARKER_PATTERN.search(description or "")
    if not match:
        return None
    try:
        return LaunchRequest.model_validate_json(base64.urlsafe_b64decode(match.group(1)))
    except ValueError:
        return None
