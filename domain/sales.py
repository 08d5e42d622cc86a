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

Messages are Block Kit within Slack's limits (header 150 characters, section text 3000,
field 2000, 10 fields, 50 blocks); text people wrote is escaped for mrkdwn (``& < >``) so a
title like "A <b> & C" cannot turn into a link or a mention.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from tminus.domain.request import Feature, LaunchRequest, Tier

HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
MAX_FIELDS = 10
MAX_BLOCKS = 50

Decision = Literal["announce", "correct"]

NOTE_MARKER = "<!-- tminus:sales-"  # both markers below start with it: finds the sales note
RECORD_PATTERN = re.compile(r"<!-- tminus:sales-notified (\{[^\n]*?\}) -->")
PENDING_PATTERN = re.compile(r"<!-- tminus:sales-pending (\{[^\n]*?\}) -->")
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
    return f"<!-- tminus:sales-notified {data} -->"


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
            f"<!-- tminus:sales-pending {data} -->",
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


# --- mrkdwn helpers -------------------------------------------------------------------------


def escape(text: str) -> str:
    """Escape Slack's mrkdwn control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str, label: str) -> str:
    safe_url = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    return f"<{safe_url}|{escape(label).replace('|', '/')}>"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def fit(text: str, limit: int) -> str:
    """Cut mrkdwn to ``limit`` at a line boundary, so no link or entity is cut in half."""
    if len(text) <= limit:
        return text
    kept: list[str] = []
    size = 0
    for line in text.split("\n"):
        if size + len(line) + 1 > limit - 2:
            break
        kept.append(line)
        size += len(line) + 1
    if not kept:  # one huge line: cut it before any half-open link or entity
        head = text[: limit - 2]
        for opener, closer in (("<", ">"), ("&", ";")):
            cut = head.rfind(opener)
            if cut > head.rfind(closer):
                head = head[:cut]
        return head + " …"
    return "\n".join(kept) + "\n…"


def _tier(tier: Tier) -> str:
    return f"{tier.value} ({tier.size})"


def _section(text: str, fields: list[str] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "section",
        "text": {"type": "mrkdwn", "text": fit(text, SECTION_LIMIT)},
    }
    if fields:
        block["fields"] = [
            {"type": "mrkdwn", "text": fit(f, FIELD_LIMIT)} for f in fields[:MAX_FIELDS]
        ]
    return block


def _header(text: str) -> dict[str, Any]:
    # plain_text: Slack shows it verbatim, so it is not mrkdwn-escaped.
    return {"type": "header", "text": {"type": "plain_text", "text": _clip(text, HEADER_LIMIT)}}


def _short(url: str) -> str:
    parts = urlsplit(url)
    return (parts.netloc + parts.path).rstrip("/") or url


# --- the message ----------------------------------------------------------------------------


def _feature_text(feature: Feature) -> str:
    lines = [f"*{escape(feature.name)}*", escape(feature.summary)]
    if feature.audience:
        lines.append(f"*Who it is for:* {escape(feature.audience)}")
    if feature.pain:
        lines.append(f"*Pain it solves:* {escape(feature.pain)}")
    if feature.selling_points:
        lines.append("*Key selling points*")
        lines.extend(f"• {escape(p)}" for p in feature.selling_points)
    if feature.limitations:
        lines.append("*Limitations sales must know*")
        lines.extend(f"• {escape(p)}" for p in feature.limitations)
    docs = ", ".join(link(str(u), _short(str(u))) for u in feature.docs_urls)
    lines.append(f"*Docs:* {docs}")
    return "\n".join(lines)


def _correction_header(request: LaunchRequest, old: SentRecord) -> str:
    changes = []
    if old.launch_date != request.launch_date:
        changes.append(
            f"now launches {request.launch_date.isoformat()} (was {old.launch_date.isoformat()})"
        )
    if old.tier != request.tier:
        changes.append(f"tier changed {old.tier.value} -> {request.tier.value}")
    suffix = (" " + ", ".join(changes)) if changes else " (details changed)"
    room = HEADER_LIMIT - len("Correction: ") - len(suffix)
    return f"Correction: {_clip(request.title, max(room, 10))}{suffix}"


def _what_changed(request: LaunchRequest, old: SentRecord) -> str:
    lines = ["*What changed*"]
    if old.launch_date != request.launch_date:
        lines.append(
            f"• Launch date: ~{old.launch_date.isoformat()}~ → *{request.launch_date.isoformat()}*"
        )
    if old.tier != request.tier:
        lines.append(f"• Tier: ~{_tier(old.tier)}~ → *{_tier(request.tier)}*")
    if len(lines) == 1:
        lines.append("• Details of the launch changed.")
    lines.append("The kit below is the current one; it replaces the earlier message.")
    return "\n".join(lines)


def sales_message(
    request: LaunchRequest,
    *,
    tracking_url: str | None,
    features_url: str | None,
    correction_of: SentRecord | None = None,
) -> dict[str, Any]:
    """The Slack payload ``{"text": fallback, "blocks": [...]}`` carrying the sales kit.

    A correction opens with what changed, then repeats the whole current kit, so the latest
    message is always enough on its own.
    """
    when = request.launch_date.isoformat()
    title = escape(request.title)
    if correction_of is None:
        header = f"Launch: {request.title}"
        fallback = f"Launch: {request.title}, tier {_tier(request.tier)}, on {when}"
    else:
        header = _correction_header(request, correction_of)
        fallback = header

    head: list[dict[str, Any]] = [_header(header)]
    if correction_of is not None:
        head.append(_section(_what_changed(request, correction_of)))

    fields = [f"*Tier*\n{_tier(request.tier)}", f"*Launch date*\n{when}"]
    if request.release_tag:
        fields.append(f"*Release*\n{escape(request.release_tag)}")
    fields.append(f"*PMM (GitLab)*\n{escape(request.owner)}")
    if request.training:
        fields.append(f"*Training*\n{escape(request.training)}")
    head.append(
        _section(f"*{title}* launches on *{when}*: a tier {_tier(request.tier)} launch.", fields)
    )
    if request.pitch:
        head.append(
            _section(
                f"*In 25 words*\n{escape(request.pitch.words_25)}\n\n"
                f"*In 50 words*\n{escape(request.pitch.words_50)}"
            )
        )
    head.append({"type": "divider"})

    links = []
    if features_url:
        links.append(f"• /features page: {link(features_url, _short(features_url))}")
    if tracking_url:
        links.append(f"• Launch issue: {link(tracking_url, _short(tracking_url))}")
    if request.blog_url:
        links.append(f"• Blog post: {link(str(request.blog_url), _short(str(request.blog_url)))}")
    tail: list[dict[str, Any]] = [{"type": "divider"}]
    if links:
        tail.append(_section("*Links*\n" + "\n".join(links)))
    tail.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"Sent by tminus for launch `{escape(request.slug)}`. One message per "
                    "launch; a correction follows if the date or tier moves.",
                }
            ],
        }
    )

    room = MAX_BLOCKS - len(head) - len(tail)
    features = list(request.features)
    if len(features) > room:  # keep within 50 blocks: list the rest by name
        shown, rest = features[: room - 1], features[room - 1 :]
        body = [_section(_feature_text(f)) for f in shown]
        names = ", ".join(escape(f.name) for f in rest)
        body.append(_section(f"*And {len(rest)} more features:* {names}"))
    else:
        body = [_section(_feature_text(f)) for f in features]
    return {"text": escape(fallback), "blocks": [*head, *body, *tail]}
