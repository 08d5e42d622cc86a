"""The sales notification, as data: the enablement kit as a Slack message, and what was sent.

Sales wants one message per launch and a correction when the date or tier moves, not a
stream. Slack webhooks cannot be read back, so what was announced is remembered in GitLab: one
note on the tracking issue (``SalesNote``, ``render_note``) carrying a ``SentRecord`` marker
(``render_record``). A run reads it back (``read_note``), compares it with the launch
(``decide``) and posts only when there is something sales must hear.

At most once: the intent (a ``pending`` record) is written to the note *before* posting, and
replaced by the sent record after Slack said ``ok``. A pending record found later (Slack's
answer was lost, or the run died between the two writes) means "maybe sent": nothing is
posted until a PMM ticks one of the note's two boxes (it arrived / send it again). Pure: no
I/O here.

The message itself is Slack's format (Block Kit), so it is built in
``tminus.integrations.slack_blocks``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from tminus.domain import markers
from tminus.domain.plan import Plan
from tminus.domain.request import LaunchRequest, Tier
from tminus.domain.results import ActionResult, Outcome

Decision = Literal["announce", "correct"]

NOTE_MARKER = markers.SALES  # both markers below start with it: finds the sales note
RECORD_PATTERN = markers.SALES_SENT_PATTERN
PENDING_PATTERN = markers.SALES_PENDING_PATTERN
ARRIVED_BOX = "It arrived in the sales channel: record it as sent"
RESEND_BOX = "It did not arrive: send it again"
_TICKED = re.compile(r"^\s*[-*]\s*\[[xX]\]\s*(.+?)\s*$", re.MULTILINE)


class SentRecord(BaseModel):
    """What sales was told about a launch: enough to know whether to tell them again."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    slug: str
    tier: Tier
    launch_date: date
    digest: str  # of the whole kit: lets a report say "kit edited since it was sent"
    # Set on a pending message: names the replies that settle it (``reply``).
    attempt: str | None = None


def _kit_digest(request: LaunchRequest) -> str:
    kit = request.model_dump(
        mode="json",
        include={
            "title",
            "tier",
            "launch_date",
            "release_tag",
            "features",
            "pitch",
            "blog_url",
            "training",
        },
    )
    canonical = json.dumps(kit, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def sent_record(request: LaunchRequest) -> SentRecord:
    return SentRecord(
        slug=request.slug,
        tier=request.tier,
        launch_date=request.launch_date,
        digest=_kit_digest(request),
    )


def render_record(record: SentRecord) -> str:
    """One line, invisible in GitLab's rendered note: ``<!-- tminus:sales-notified {...} -->``."""
    data = json.dumps(
        record.model_dump(mode="json", exclude={"attempt"}, exclude_none=True),
        separators=(",", ":"),
    )
    return markers.comment(markers.SALES_SENT, data)


def parse_record(text: str) -> SentRecord | None:
    """The last valid record in ``text``; None when there is none (a damaged one is skipped)."""
    return _parse(RECORD_PATTERN, text)


def _parse(pattern: re.Pattern[str], text: str) -> SentRecord | None:
    found = None
    for match in pattern.finditer(text or ""):
        try:
            found = SentRecord.model_validate_json(match.group(1))
        except ValidationError:
            continue
    return found


@dataclass(frozen=True)
class SalesNote:
    """What the tracking issue's sales note says.

    ``sent``: what sales was last told (Slack said ``ok``). ``pending``: a message tminus was
    about to post, or posted without hearing back: it may or may not have arrived.
    ``arrived`` / ``resend``: the box a PMM ticked to settle a pending message.
    ``history``: one line per message sales got, oldest first.
    """

    sent: SentRecord | None = None
    pending: SentRecord | None = None
    arrived: bool = False
    resend: bool = False
    history: tuple[str, ...] = ()

    def settled(self) -> SalesNote:
        """The note once a PMM's answer is applied: "arrived" makes the pending message the
        sent one; "send it again" forgets it (so the decision posts it again)."""
        if self.pending is None or not (self.arrived or self.resend):
            return self
        if self.arrived:
            line = f"- {_what(self.sent, self.pending)} (confirmed by a PMM)"
            return SalesNote(sent=self.pending, history=(*self.history, line))
        return SalesNote(sent=self.sent, history=self.history)


def read_note(body: str | None) -> SalesNote:
    """The sales note in ``body`` (an empty one when there is no note)."""
    text = body or ""
    ticked = {m.group(1) for m in _TICKED.finditer(text)}
    return SalesNote(
        sent=_parse(RECORD_PATTERN, text),
        pending=_parse(PENDING_PATTERN, text),
        arrived=ARRIVED_BOX in ticked,
        resend=RESEND_BOX in ticked and ARRIVED_BOX not in ticked,
        history=tuple(ln for ln in text.splitlines() if ln.startswith("- ") and "[" not in ln[:5]),
    )


def _what(sent: SentRecord | None, record: SentRecord) -> str:
    what = "Sales notified" if sent is None else "Sales sent a correction"
    return f"{what} in Slack: tier {record.tier.value}, launch {record.launch_date.isoformat()}"


def render_note(note: SalesNote, when: str) -> str:
    """The note's body: a line for people, the markers for the next run, the history.

    ``when`` stamps a pending message (when tminus started posting it).
    """
    parts: list[str] = []
    if note.sent is not None:
        parts += [f"{_what(None, note.sent).replace('Sales notified', 'Sales was told')}.", ""]
        parts += [render_record(note.sent), ""]
    if note.pending is not None:
        data = json.dumps(
            note.pending.model_dump(mode="json", exclude_none=True), separators=(",", ":")
        )
        parts += [
            f"**Sales message in flight since {when}** ({_what(note.sent, note.pending)}). "
            "If this paragraph is still here, Slack's answer never came back: the message may "
            "or may not be in the sales channel, and tminus will not post it again by itself. "
            "Check the channel, tick one box, and run the launch again:",
            "",
            f"- [ ] {ARRIVED_BOX}",
            f"- [ ] {RESEND_BOX}",
            "",
            f"(Or comment `{reply(note.pending, 'arrived')}` or "
            f"`{reply(note.pending, 'resend')}` on this issue.)",
            "",
            markers.comment(markers.SALES_PENDING, data),
            "",
        ]
    if note.sent is None and note.pending is None:
        parts += ["Sales has not been told about this launch yet.", "", f"{NOTE_MARKER}none -->"]
    parts += list(note.history)
    return "\n".join(parts).strip() + "\n"


def sent_note(note: SalesNote, stamp: str) -> SalesNote:
    """The note after Slack said ``ok`` to the pending message."""
    assert note.pending is not None
    line = f"- {stamp}: {_what(note.sent, note.pending)}"
    return SalesNote(sent=note.pending, history=(*note.history, line))


def intent_note(note: SalesNote, record: SentRecord, attempt: str) -> SalesNote:
    """The note written before posting ``record``; ``attempt`` is new for every post."""
    pending = record.model_copy(update={"attempt": attempt})
    return replace(note, pending=pending, arrived=False, resend=False)


def reply(record: SentRecord, answer: Literal["arrived", "resend"]) -> str:
    """The comment that settles a pending message, for people who may not tick the note's
    boxes (GitLab lets only Maintainers tick boxes in another user's comment)."""
    return f"tminus sales {record.attempt} {answer}"


def answered(note: SalesNote, arrived: bool, resend: bool) -> SalesNote:
    """The note with a PMM's reply applied (ticked boxes count as well)."""
    return replace(note, arrived=note.arrived or arrived, resend=note.resend or resend)


def decide(note: SalesNote, current: SentRecord) -> Decision | Literal["unknown"] | None:
    """What to do now: post (announce / correct), nothing, or "unknown" (a message may have
    been posted and a PMM has not said whether it arrived)."""
    note = note.settled()
    if note.pending is not None:
        return "unknown"
    return needs_message(note.sent, current)


def needs_message(previous: SentRecord | None, current: SentRecord) -> Decision | None:
    """Announce once; correct when the tier or the date moved; otherwise stay quiet.

    Other edits (a selling point reworded) do not re-notify sales: they asked for one message
    per launch, and a correction for each typo would be the stream they do not want.
    """
    if previous is None:
        return "announce"
    if previous.tier != current.tier or previous.launch_date != current.launch_date:
        return "correct"
    return None


# --- the diff: what sales must hear now ------------------------------------------------------

MAYBE_SENT = (
    "a message to sales may or may not have reached the channel (Slack's answer was lost, or "
    "a run stopped while posting). Nothing is posted again until a PMM checks the channel and "
    "ticks a box on the tracking issue's sales note; then run the launch again"
)


@dataclass(frozen=True)
class SalesState:
    """The sales note as observed on the tracking issue, and what it means for the launch now
    (the diff): announce, correct, nothing (None), or "unknown" (maybe sent)."""

    decision: Decision | Literal["unknown"] | None
    note_id: int | None
    note: SalesNote  # as found, with a PMM's replies applied

    @property
    def what(self) -> str:
        return "announcement" if self.decision == "announce" else "correction"

    @property
    def outcome(self) -> Outcome:
        """The row's outcome once the message went out (or for a dry run)."""
        return {None: Outcome.unchanged, "announce": Outcome.created}.get(
            self.decision, Outcome.updated
        )


def diff_sales(note_id: int | None, note: SalesNote, request: LaunchRequest) -> SalesState:
    return SalesState(decide(note, sent_record(request)), note_id, note)


def sales_row(plan: Plan, outcome: Outcome, detail: str, url: str | None = None) -> ActionResult:
    """The sales notification's row of the results table."""
    key = plan.notification.key if plan.notification else f"{plan.request.slug}/notify"
    return ActionResult(
        key=key, kind="sales", title="Sales notification", outcome=outcome, url=url, detail=detail
    )
