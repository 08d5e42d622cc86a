"""Slack, through an incoming webhook over httpx: the only module that talks to Slack.

Prefect's own ``SlackWebhook`` block accepts only hooks.slack.com URLs, sends legacy
attachments and swallows failures, so tminus posts Block Kit itself.

Answers: ``200 ok`` is success. Errors are a bare code in the body; 4xx codes are
``PermanentError`` with a one-line fix. A message is re-sent only when it surely was not
posted: the connection was refused, or Slack answered 429 (waiting ``Retry-After``); the
``RetryPolicy`` (``integrations.retry``) bounds those attempts. Anything else after the request
left (a 5xx, from Slack or a proxy in front of it; a timeout; a dropped connection) may follow
a posted message, and a webhook cannot be asked: it raises ``MaybeSentError`` at once, never a
second post (sales wants one message, not two).

The webhook URL is a credential (anyone holding it can post to the channel). It never
appears in an exception, a log line or a repr: errors name only the host, exceptions are
raised ``from None`` (httpx exceptions carry the request URL), and httpx's own
``HTTP Request: POST <url>`` log line is redacted.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from tminus.errors import PermanentError, TransientError
from tminus.integrations.retry import RetryPolicy, parse_retry_after

SYSTEM = "Slack"
RESOURCE = "webhook"
log = logging.getLogger(__name__)

_FIX_URL = "create a new incoming webhook and update TMINUS_SLACK_WEBHOOK_URL"
HINTS: dict[str, str] = {
    "invalid_payload": "the message is not valid JSON for Slack; report this tminus bug",
    "no_text": "the message has neither text nor blocks; report this tminus bug",
    "invalid_blocks": "a Block Kit block was refused (too long or malformed); report this bug",
    "invalid_blocks_format": "the blocks are not a valid Block Kit list; report this bug",
    "too_many_attachments": "the message has too many attachments; report this tminus bug",
    "no_service_id": f"the webhook URL is incomplete; {_FIX_URL}",
    "invalid_token": f"the webhook was revoked or its app removed; {_FIX_URL}",
    "action_prohibited": "a workspace admin restricted posting to this channel; ask them, or "
    "use a webhook of another channel",
    "posting_to_general_channel_denied": "only admins may post to this channel; use a webhook "
    "of another channel",
    "no_service": f"the webhook does not exist (removed or mistyped); {_FIX_URL}",
    "no_active_hooks": f"the webhook's app was disabled; {_FIX_URL}",
    "channel_not_found": f"the webhook's channel was deleted; {_FIX_URL}",
    "user_not_found": f"the webhook's user is gone; {_FIX_URL}",
    "no_team": f"the workspace is gone; {_FIX_URL}",
    "team_disabled": f"the workspace is disabled; {_FIX_URL}",
    "channel_is_archived": f"the channel is archived; unarchive it, or {_FIX_URL}",
}
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Failures where nothing was sent, so trying again cannot post twice.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class _Redactor(logging.Filter):
    """Replaces webhook secrets in log records of the loggers it is attached to."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self.secrets:
            redacted = redacted.replace(secret, "/***")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACTOR = _Redactor()


def _protect(secret_path: str) -> None:
    if len(secret_path) < 4:  # nothing secret in "/" and replacing it would mangle every line
        return
    _REDACTOR.secrets.add(secret_path)
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)


def _code(response: httpx.Response) -> str:
    """Slack's error code, or a neutral word: never echo an arbitrary body (it could be long,
    HTML, or quote the request)."""
    first = response.text.strip().split("\n", 1)[0].strip()
    return first if _CODE.match(first) else "unexpected_answer"


class SlackNotifier:
    """Posts messages to one Slack incoming webhook."""

    def __init__(
        self,
        webhook_url: str | SecretStr,
        timeout: float = 10,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        url = webhook_url.get_secret_value() if isinstance(webhook_url, SecretStr) else webhook_url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Deliberately not quoting the value: it is a secret.
            raise ValueError("the Slack webhook URL must be an http(s) URL")
        self._url = SecretStr(url)
        self.host = parts.hostname
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        _protect(parts.path + (f"?{parts.query}" if parts.query else ""))
        _protect(parts.path)

    def __repr__(self) -> str:
        return f"SlackNotifier(host={self.host!r})"

    def post(self, payload: dict[str, Any]) -> None:
        """Post one message; return when Slack said ``ok``.

        Raises ``PermanentError`` (refused: not posted), ``TransientError`` (not posted after
        the policy's attempts) or ``MaybeSentError`` (the answer was lost: it may be posted).
        """
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            self.retry.call(lambda: self._attempt(client, payload), idempotent=False)

    def _attempt(self, client: httpx.Client, payload: dict[str, Any]) -> None:
        try:
            response = client.post(self._url.get_secret_value(), json=payload)
        except _NOT_SENT as exc:
            raise TransientError(
                SYSTEM,
                f"cannot reach Slack at {self.host} ({type(exc).__name__})",
                resource=RESOURCE,
                sent=False,
            ) from None
        except httpx.HTTPError as exc:
            raise TransientError(
                SYSTEM,
                f"the answer from {self.host} was lost ({type(exc).__name__})",
                resource=RESOURCE,
            ) from None
        status = response.status_code
        if status == 200 and response.text.strip() == "ok":
            log.info("Slack message posted (webhook on %s)", self.host)
            return
        code = _code(response)
        if status == 429:
            raise TransientError(
                SYSTEM,
                "rate limited (429)",
                status=status,
                resource=RESOURCE,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                sent=False,
            )
        if status >= 500 or status == 408:
            raise TransientError(
                SYSTEM, f"Slack answered {status} ({code})", status=status, resource=RESOURCE
            )
        hint = HINTS.get(code, "Slack refused the message")
        raise PermanentError(SYSTEM, f"{code}: {hint}", status=status, resource=RESOURCE)


# --- how a message reads ------------------------------------------------------------------------

_LINK = re.compile(r"<([^|<>\s]+)\|([^<>]*)>")
_BOLD = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")
_STRIKE = re.compile(r"(?<![\w~])~([^~\n]+)~(?![\w~])")


def _inert(text: str) -> str:
    """Text people wrote, with Markdown's link and image syntax escaped: ``[x](y)`` in a
    launch file is shown as typed (as Slack shows it), never as a link or an image."""
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def mrkdwn_to_markdown(text: str) -> str:
    """Slack mrkdwn as Markdown: ``*bold*``, ``~strike~`` and ``<url|label>`` links. Entities
    (``&lt;`` ...) stay escaped, so text people wrote cannot turn into HTML, and brackets are
    escaped, so it cannot turn into a link either: only tminus's own links are links."""
    parts = []
    for i, piece in enumerate(_LINK.split(text)):
        if i % 3 == 0:
            parts.append(_inert(piece))
        elif i % 3 == 1:
            url = piece.replace("(", "%28").replace(")", "%29")
        else:
            parts.append(f"[{_inert(piece)}]({url})")
    text = "".join(parts)
    text = _BOLD.sub(r"**\1**", text)
    text = _STRIKE.sub(r"~~\1~~", text)
    return text.replace("\n", "  \n")


def as_markdown(payload: dict[str, Any]) -> str:
    """A Block Kit message rendered as Markdown, block by block, as sales will read it (for
    the approval form and the ``sales-message-<slug>`` artifact)."""
    out: list[str] = []
    for block in payload.get("blocks") or []:
        kind = block.get("type")
        if kind == "header":
            plain = _inert(str(block["text"]["text"]).replace("<", "&lt;").replace(">", "&gt;"))
            out.append(f"### {plain}")
        elif kind == "section":
            parts = [mrkdwn_to_markdown(str(block["text"]["text"]))]
            parts += [
                "- " + mrkdwn_to_markdown(str(f["text"])).replace("  \n", ": ", 1)
                for f in block.get("fields", [])
            ]
            out.append(
                "\n".join(parts) if len(parts) == 1 else parts[0] + "\n\n" + "\n".join(parts[1:])
            )
        elif kind == "divider":
            out.append("---")
        elif kind == "context":
            texts = [mrkdwn_to_markdown(str(e.get("text", ""))) for e in block.get("elements", [])]
            out.append("_" + " ".join(t for t in texts if t) + "_")
    if not out:  # a text-only message
        out.append(mrkdwn_to_markdown(str(payload.get("text", ""))))
    return "\n\n".join(out)
