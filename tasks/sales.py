"""Prefect tasks for the sales notification: decide, post, record.

Slack incoming webhooks cannot be read back, so what sales was told is recorded as one note
on the launch's tracking issue in GitLab. That note, not a local cache, is what makes the
notification "one message per launch, whatever the number of re-runs": a re-run reads it,
and sends nothing unless the tier or the date moved (then one correction).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from prefect import task
from prefect.cache_policies import NO_CACHE

from integrations.slack import SlackNotifier
from tminus.plan import Plan
from tminus.reconcile import ActionResult, IssueTracker, Outcome
from tminus.sales import (
    Decision,
    SentRecord,
    needs_message,
    parse_record,
    sales_note,
    sent_record,
)

SALES_NOTE_MARKER = "tminus:sales-notified"


@task(name="sales-decision", cache_policy=NO_CACHE)
def sales_decision(
    tracker: IssueTracker, plan: Plan, tracking_iid: int
) -> tuple[str | None, SentRecord | None, int | None]:
    """(what to send: "announce" | "correct" | None, what was sent before, its note id)."""
    found = tracker.find_note(plan.request.project, tracking_iid, SALES_NOTE_MARKER)
    previous = parse_record(found[1]) if found else None
    decision = needs_message(previous, sent_record(plan.request))
    return decision, previous, (found[0] if found else None)


@task(name="post-sales-message", cache_policy=NO_CACHE)
def post_sales_message(notifier: SlackNotifier, payload: dict[str, object]) -> None:
    """Post to the sales channel. No Prefect retries: the notifier retries 429 and 5xx
    itself, and a repeat after an unknown outcome would be a second message to sales."""
    notifier.post(payload)


@task(name="record-sales-message", cache_policy=NO_CACHE)
def record_sales_message(
    tracker: IssueTracker, plan: Plan, tracking_iid: int, decision: str
) -> None:
    """Write (or update in place) the tracking issue's note saying what sales was told.

    Looks at GitLab first on every attempt, so a retry after a lost answer does not add a
    second note, and a note that already records this message is left alone."""
    request = plan.request
    record = sent_record(request)
    found = tracker.find_note(request.project, tracking_iid, SALES_NOTE_MARKER)
    if found is not None and parse_record(found[1]) == record:
        return
    # The note is tminus.sales.sales_note (a line for people and the marker), followed by
    # the history of what sales was told, newest last.
    note = sales_note(record, cast(Decision, decision))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    history = [ln for ln in found[1].splitlines() if ln.startswith("- ")] if found else []
    body = "\n".join([note, "", *history, f"- {stamp}: {note.splitlines()[0]}"])
    if found is None:
        tracker.add_note(request.project, tracking_iid, body)
    else:
        tracker.update_note(request.project, tracking_iid, found[0], body)


def outcome_for(decision: str | None) -> Outcome:
    return {None: Outcome.unchanged, "announce": Outcome.created}.get(decision, Outcome.updated)


def sales_result(plan: Plan, outcome: Outcome, detail: str, url: str | None = None) -> ActionResult:
    key = plan.notification.key if plan.notification else f"{plan.request.slug}/notify"
    return ActionResult(
        key=key, kind="sales", title="Sales notification", outcome=outcome, url=url, detail=detail
    )
