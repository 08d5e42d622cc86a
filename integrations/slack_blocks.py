"""The sales kit as a Slack message (Block Kit): Slack's format, so it lives with the adapter.

Messages stay within Slack's limits (header 150 characters, section text 3000, field 2000,
10 fields, 50 blocks); text people wrote is escaped for mrkdwn (``& < >``) so a title like
"A <b> & C" cannot turn into a link or a mention. What to send and when is decided in
``tminus.domain.sales``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tminus.domain.request import Feature, LaunchRequest, Tier
from tminus.domain.sales import SentRecord

HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
MAX_FIELDS = 10
MAX_BLOCKS = 50

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
    if feature.benefit:
        lines.append(f"*Benefit:* {escape(feature.benefit)}")
    if feature.workflow:
        lines.append(f"*How their workflow changes:* {escape(feature.workflow)}")
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
