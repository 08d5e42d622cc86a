"""The sales notification as Prefect tasks: observe the sales note, apply a message.

Slack incoming webhooks cannot be read back, so what sales was told is recorded as one note
on the launch's tracking issue in GitLab (``tminus.domain.sales.SalesNote``). That note, not a
local cache, is what makes the notification "one message per launch, whatever the number of
re-runs": a run observes it, the domain diffs it against the launch (``diff_sales``), and a
message is applied only when the tier or the date moved (then one correction). The intent is
written to the note before the post, so a lost answer or a crash can never lead to a second
message (``send_message``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from uuid import uuid4

from prefect import task
from prefect.cache_policies import NO_CACHE

from tminus.domain.answers import sister_answers
from tminus.domain.issues import IssueTracker
from tminus.domain.plan import Plan
from tminus.domain.results import ActionResult, Outcome
from tminus.domain.sales import (
    MAYBE_SENT,
    NOTE_MARKER,
    SalesNote,
    SalesState,
    answered,
    diff_sales,
    intent_note,
    read_note,
    render_note,
    reply,
    sales_row,
    sent_note,
    sent_record,
)
from tminus.errors import IntegrationError, MaybeSentError, TminusError
from tminus.integrations.slack import SalesChannel


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


@task(name="observe-sales", cache_policy=NO_CACHE)
def observe_sales(tracker: IssueTracker, plan: Plan, tracking_iid: int) -> SalesState:
    """Read the sales note (and a PMM's reply comments after it) from GitLab, and diff it
    against the launch: announce, correct, nothing, or unknown."""
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
    return diff_sales(found[0] if found else None, note, plan.request)


@task(name="observe-answers", cache_policy=NO_CACHE)
def observe_answers(tracker: IssueTracker, plan: Plan) -> dict[str, dict[str, str]]:
    """Read the answers typed into the launch's sister issues (read only): feature slug ->
    question -> answer."""
    request = plan.request
    issues = tracker.find_issues(request.project, request.launch_label, plan.launch_marker)
    return sister_answers(plan, issues)


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
def post_sales_message(notifier: SalesChannel, payload: dict[str, Any]) -> None:
    """Post to the sales channel once. No Prefect retries: the notifier re-sends only what
    surely was not posted (refused connection, 429) and raises ``MaybeSentError`` otherwise."""
    notifier.post(payload)


def send_message(
    tracker: IssueTracker,
    notifier: SalesChannel,
    plan: Plan,
    tracking_iid: int,
    state: SalesState,
    payload: dict[str, Any],
) -> ActionResult:
    """Apply a message: record the intent, post once, record what was sent. Call with the
    launch lock held.

    At most once: the intent is on the tracking issue before the post, so a lost answer or a
    crash leaves a "maybe sent" note for a PMM instead of a second message."""
    settled = state.note.settled()
    intent = intent_note(settled, sent_record(plan.request), uuid4().hex[:8])
    note_id = write_sales_note(tracker, plan, tracking_iid, state.note_id, intent)
    try:
        post_sales_message(notifier, payload)
    except MaybeSentError:
        return sales_row(plan, Outcome.failed, MAYBE_SENT)
    except IntegrationError as exc:
        # Surely not posted (refused, or unreachable after every attempt): forget the intent.
        write_sales_note(tracker, plan, tracking_iid, note_id, settled)
        return sales_row(plan, Outcome.failed, f"not sent: {exc}")
    try:
        write_sales_note(tracker, plan, tracking_iid, note_id, sent_note(intent, now_stamp()))
    except TminusError as exc:
        return sales_row(
            plan,
            Outcome.failed,
            f"{state.what} sent, but recording it on the tracking issue failed ({exc}): its "
            "sales note still says the message is in flight; tick 'It arrived' there",
        )
    return sales_row(plan, state.outcome, f"{state.what} sent")
