"""Telling sales: the one launch step that may wait for a person.

Observe the sales note, diff it against the launch (``tminus.domain.sales``), and apply the
message (``tminus.tasks.sales.send_message``), after a PMM approves it for the tiers the
playbook names. The approval waits without holding the launch lock; once approved, the note is
observed again under the lock, so a message another run sent meanwhile is not sent twice.
"""

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from prefect import get_run_logger, pause_flow_run, suspend_flow_run
from prefect.artifacts import create_markdown_artifact
from prefect.input import RunInput
from prefect.runtime import deployment as deployment_ctx
from pydantic import Field

from tminus.domain.answers import fill_kit
from tminus.domain.issues import CANCELLED_LABEL, IssueTracker
from tminus.domain.plan import IssueRole, Plan
from tminus.domain.results import ActionResult, Outcome
from tminus.domain.sales import MAYBE_SENT, SalesState, sales_row, sent_record
from tminus.errors import TminusError
from tminus.integrations.clients import Systems
from tminus.integrations.slack import SalesChannel, as_markdown
from tminus.integrations.slack_blocks import sales_message
from tminus.settings import Settings
from tminus.tasks.locks import launch_lock
from tminus.tasks.sales import observe_answers, observe_sales, send_message, write_sales_note


class SalesApproval(RunInput):
    """A PMM's answer to "send this launch message to sales?"."""

    approve: bool = Field(default=False, description="Send the message shown above to sales.")
    comment: str = Field(default="", description="Optional: why (kept in the run's logs).")


@dataclass
class PendingMessage:
    """A message to sales that is decided but not sent yet."""

    state: SalesState
    payload: dict[str, Any]
    tracking_iid: int
    digest: str = ""  # of the kit shown (the launch file and the answers it took)

    @property
    def shown(self) -> str:
        """The whole message as sales will read it (markdown), for the artifact and the form."""
        return f"## Message to sales ({self.state.what})\n\n{as_markdown(self.payload)}\n"


def prepare_sales(
    tracker: IssueTracker,
    notifier: SalesChannel | None,
    settings: Settings,
    plan: Plan,
    tracking: ActionResult | None,
    dry_run: bool,
) -> ActionResult | PendingMessage:
    """What sales should be told now: nothing (a row says why) or a pending message."""
    if tracking is None or tracking.iid is None:
        return sales_row(plan, Outcome.skipped, "no tracking issue to record the message on")
    if notifier is None:
        return sales_row(plan, Outcome.skipped, "TMINUS_SLACK_WEBHOOK_URL is not set")
    state = observe_sales(tracker, plan, tracking.iid)
    if state.decision == "unknown":
        return sales_row(plan, Outcome.failed, MAYBE_SENT, url=tracking.url)
    settled = state.note.settled()
    if state.decision is None:
        if settled != state.note and not dry_run:  # a PMM said "it arrived": tidy the note
            write_sales_note(tracker, plan, tracking.iid, state.note_id, settled)
        return sales_row(plan, Outcome.unchanged, "sales already told; tier and date unchanged")
    if dry_run:
        return sales_row(plan, state.outcome, f"would send the {state.what}")
    # The sister issues' answers fill what the launch file leaves empty in the kit.
    kit = fill_kit(plan.request, observe_answers(tracker, plan), kit_questions(plan))
    payload = sales_message(
        kit,
        tracking_url=tracking.url,
        features_url=settings.features_page,
        correction_of=settled.sent if state.decision == "correct" else None,
    )
    pending = PendingMessage(state, payload, tracking.iid, sent_record(kit).digest)
    create_markdown_artifact(
        key=f"sales-message-{plan.request.slug}",
        markdown=pending.shown,
        description=f"Sales {state.what} for {plan.request.title}",
    )
    return pending


def kit_questions(plan: Plan) -> dict[str, str]:
    return plan.notification.kit if plan.notification else {}


def approve_and_send(
    tracker: IssueTracker,
    notifier: SalesChannel,
    settings: Settings,
    plan: Plan,
    pending: PendingMessage,
) -> ActionResult:
    """Wait for a PMM (without holding the launch lock), then send what was approved, unless
    the launch changed meanwhile or another run already told sales."""
    logger = get_run_logger()
    what = pending.state.what
    logger.info(
        "Waiting for a PMM to approve the sales %s: resume this flow run in the Prefect UI", what
    )
    form = SalesApproval.with_initial_data(
        description=f"{pending.shown}\nApprove to send it to the sales channel.",
        approve=False,
    )
    if deployment_ctx.id:
        # A deployment run (UI, trigger, schedule) suspends: its process exits and frees the
        # runner's slot while the PMM takes their time; on Resume the run starts again from
        # the top (every step is idempotent: nothing is redone) and gets the answer here.
        # A new answer in a sister issue changes the message: it asks for a new approval.
        key = f"sales-{pending.state.decision}-{pending.digest}"
        answer = suspend_flow_run(wait_for_input=form, timeout=settings.approval_timeout, key=key)
    else:
        answer = pause_flow_run(
            wait_for_input=form, timeout=settings.approval_timeout, poll_interval=2
        )
    if not answer.approve:
        logger.info("Sales %s declined: %s", what, answer.comment or "no comment")
        return sales_row(plan, Outcome.skipped, f"declined by the PMM: {answer.comment}")
    with launch_lock(plan.request.slug) as lock:
        now = observe_sales(tracker, plan, pending.tracking_iid)
        if now.decision != pending.state.decision or now.note != pending.state.note:
            return sales_row(
                plan,
                Outcome.skipped,
                "sales was told by another run while this one waited for approval",
            )
        if _cancelled(tracker, plan, pending.tracking_iid):
            return sales_row(plan, Outcome.skipped, "the launch was cancelled meanwhile")
        lock.check()
        return send_message(tracker, notifier, plan, pending.tracking_iid, now, pending.payload)


def _cancelled(tracker: IssueTracker, plan: Plan, iid: int) -> bool:
    request = plan.request
    return any(
        s.iid == iid and CANCELLED_LABEL in s.labels
        for s in tracker.find_issues(request.project, request.launch_label, plan.launch_marker)
    )


def start_sales(
    systems: Systems,
    settings: Settings,
    plan: Plan,
    results: list[ActionResult],
    dry_run: bool,
    guard: Callable[[], None],
) -> ActionResult | PendingMessage | None:
    """Under the launch lock: the sales row, or a message that waits for a PMM's approval
    (None when the tier tells sales nothing)."""
    if plan.notification is None:
        return None
    tracking = next((r for r in results if r.kind == IssueRole.tracking.value), None)
    try:
        prepared = prepare_sales(
            systems.tracker, systems.notifier, settings, plan, tracking, dry_run
        )
        if isinstance(prepared, ActionResult) or plan.notification.needs_approval:
            return prepared
        guard()
        assert systems.notifier is not None  # prepare_sales skips without one
        state, iid = prepared.state, prepared.tracking_iid
        return send_message(systems.tracker, systems.notifier, plan, iid, state, prepared.payload)
    except TminusError as exc:
        return sales_row(plan, Outcome.failed, str(exc))


class SalesStart:
    """``start_sales`` begun in a thread as soon as the tracking issue is written (``begin``,
    the ``on_tracking`` of ``reconcile_issues``), while the issues' links are made: it needs
    only the tracking issue. ``result`` waits for it (or runs it, when the issues stopped
    before the tracking issue); leaving the ``with`` waits for the thread in every case."""

    def __init__(
        self,
        systems: Systems,
        settings: Settings,
        plan: Plan,
        dry_run: bool,
        guard: Callable[[], None],
    ) -> None:
        self._args = (systems, settings, plan)
        self._dry_run, self._guard = dry_run, guard
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tminus-sales")
        self._started: Future[ActionResult | PendingMessage | None] | None = None

    def begin(self, tracking: ActionResult) -> None:
        context = contextvars.copy_context()  # the flow run's: its task runs, its artifacts
        self._started = self._pool.submit(context.run, self._start, [tracking])

    def result(self, results: list[ActionResult]) -> ActionResult | PendingMessage | None:
        if self._started is None:
            return self._start(results)
        return self._started.result()

    def _start(self, results: list[ActionResult]) -> ActionResult | PendingMessage | None:
        return start_sales(*self._args, results, self._dry_run, self._guard)

    def __enter__(self) -> "SalesStart":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pool.shutdown(wait=True)
        started = self._started
        if exc is not None and started is not None and started.exception() is not None:
            # The launch failed first, so ``result`` was never read: say what sales met.
            get_run_logger().error("Sales also failed: %s", started.exception())


def finish_sales(
    systems: Systems, settings: Settings, plan: Plan, pending: PendingMessage
) -> ActionResult:
    """After the launch lock: wait for approval, then send (or say why not)."""
    assert systems.notifier is not None  # prepare_sales skips without one
    try:
        return approve_and_send(systems.tracker, systems.notifier, settings, plan, pending)
    except TminusError as exc:
        return sales_row(plan, Outcome.failed, str(exc))
