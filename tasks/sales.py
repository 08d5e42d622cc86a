"""Prefect tasks for the sales notification: read the sales note, write it, post.

Slack incoming webhooks cannot be read back, so what sales was told is recorded as one note
on the launch's tracking issue in GitLab (``tminus.domain.sales.SalesNote``). That note, not a local
cache, is what makes the notification "one message per launch, whatever the number of
re-runs": a run reads it, and sends nothing unless the tier or the date moved (then one
correction). The intent is written to the note before the post, so a lost answer or a crash
can never lead to a second message (see ``tminus.domain.sales``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from prefect import task
from prefect.cache_policies import NO_CACHE

from tminus.domain.issues import IssueTracker
from tminus.domain.plan import Plan
from tminus.domain.results import ActionResult, Outcome
from tminus.domain.sales import (
    NOTE_MARKER,
    Decision,
    SalesNote,
    answered,
    decide,
    read_note,
    render_note,
    reply,
    sent_record,
)
from tminus.integrations.slack import SlackNotifier

MAYBE_SENT = (
    "a message to sales may or may not have reached the channel (Slack's answer was lost, or "
    "a run stopped while posting). Nothing is posted again until a PMM checks the channel and "
    "ticks a box on the tracking issue's sales note; then run the launch again"
)


@dataclass(frozen=True)
class SalesState:
    """The sales note as found in GitLab, and what it means for this launch now."""

    decision: Decision | Literal["unknown"] | None
    note_id: int | None
    note: SalesNote  # as found
    body: str | None  # the note's text as found


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


@task(name="sales-decision", cache_policy=NO_CACHE)
def sales_decision(tracker: IssueTracker, plan: Plan, tracking_iid: int) -> SalesState:
    """Read the sales note from GitLab and decide: announce, correct, nothing, or unknown."""
    project = plan.request.project
    found = tracker.find_note(project, tracking_iid, NOTE_MARKER)
    note = read_note(found[1] if found else None)
    if found and note.pending is not None and not (note.arrived or note.resend):
        # A reply on the issue (after the sales note) names this attempt and the answer.
        def replied(answer: Literal["arrived", "resend"]) -> bool:
            assert found is not None and note.pending is not None
            wanted = reply(note.pending, answer)
            return tracker.find_note(project, tracking_iid, wanted, after=found[0]) is not None

        note = answered(note, arrived=replied("arrived"), resend=replied("resend"))
    return SalesState(
        decision=decide(note, sent_record(plan.request)),
        note_id=found[0] if found else None,
        note=note,
        body=found[1] if found else None,
    )


@task(name="write-sales-note", cache_policy=NO_CACHE)
def write_sales_note(
    tracker: IssueTracker, plan: Plan, tracking_iid: int, note_id: int | None, note: SalesNote
) -> int:
    """Write the sales note (in place when it exists); return its id."""
    body = render_note(note, now_stamp())
    project = plan.request.project
    if note_id is None:
        return tracker.add_note(project, tracking_iid, body)
    tracker.update_note(project, tracking_iid, note_id, body)
    return note_id


@task(name="post-sales-message", cache_policy=NO_CACHE)
def post_sales_message(notifier: SlackNotifier, payload: dict[str, object]) -> None:
    """Post to the sales channel once. No Prefect retries: the notifier re-sends only what
    surely was not posted (refused connection, 429) and raises ``MaybeSentError`` otherwise."""
    notifier.post(payload)


def outcome_for(decision: str | None) -> Outcome:
    return {None: Outcome.unchanged, "announce": Outcome.created}.get(decision, Outcome.updated)


def sales_result(plan: Plan, outcome: Outcome, detail: str, url: str | None = None) -> ActionResult:
    key = plan.notification.key if plan.notification else f"{plan.request.slug}/notify"
    return ActionResult(
        key=key, kind="sales", title="Sales notification", outcome=outcome, url=url, detail=detail
    )
