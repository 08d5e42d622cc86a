"""A local stand-in for Slack incoming webhooks, and a page showing what sales received.

``POST /slack/webhook/{token}`` behaves like ``https://hooks.slack.com/services/...``: a JSON
body (or a form field ``payload=``) with ``text`` and/or ``blocks``; ``200 ok`` on success;
errors as a plain-text code (``400 no_text``, ``400 invalid_payload``, ``400 invalid_blocks``);
about one message per second per webhook, then ``429 rate_limited`` with ``Retry-After: 1``.
Block Kit limits Slack enforces are enforced here too (50 blocks, header text 150 characters,
section text 3000, 10 fields), so a message that passes here fits Slack.

Tokens that play a failure, for tests and for trying things out: a token named ``archived``
(or starting with ``archived-``) answers ``410 channel_is_archived``; ``revoked`` answers
``403 invalid_token``; ``prohibited`` ``403 action_prohibited``; ``deleted`` ``404 no_service``.
Any other token is a working webhook.

``GET /slack/messages`` (JSON, ``?token=`` filters) and ``GET /slack/`` (read-only HTML) show
what was received. Messages live in memory or in SQLite, so they survive restarts.
"""

from __future__ import annotations

import html
import json
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tminus_sandbox.store import SqliteStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS slack_messages (
  id INTEGER PRIMARY KEY, token TEXT NOT NULL, received_at TEXT NOT NULL, payload TEXT NOT NULL);
"""

SPECIAL_TOKENS: dict[str, tuple[int, str]] = {
    "archived": (410, "channel_is_archived"),
    "revoked": (403, "invalid_token"),
    "prohibited": (403, "action_prohibited"),
    "deleted": (404, "no_service"),
}

MAX_BLOCKS = 50
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
MAX_FIELDS = 10
FIELD_LIMIT = 2000


class SlackStore(SqliteStore):
    """Received messages, and the per-webhook rate limit.

    ``rate_limit`` is messages per second per token (Slack allows about 1); ``None`` turns
    the limit off. The limiter's memory is not persisted: a restart forgets recent posts.
    """

    def __init__(self, path: str | Path = ":memory:", *, rate_limit: int | None = 1) -> None:
        super().__init__(path, SCHEMA)
        self.rate_limit = rate_limit
        self._recent: dict[str, deque[float]] = {}

    def reset(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM slack_messages")
            self._recent.clear()

    def take_slot(self, token: str) -> bool:
        """True when one more message fits this second's budget for ``token`` (and use it)."""
        if self.rate_limit is None:
            return True
        now = time.monotonic()
        with self._lock:
            recent = self._recent.setdefault(token, deque())
            while recent and now - recent[0] >= 1.0:
                recent.popleft()
            if len(recent) >= self.rate_limit:
                return False
            recent.append(now)
            return True

    def add(self, token: str, payload: dict[str, Any]) -> int:
        received = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO slack_messages (token, received_at, payload) VALUES (?, ?, ?)",
                (token, received, json.dumps(payload)),
            )
            return int(cursor.lastrowid or 0)

    def messages(self, token: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM slack_messages"
        args: tuple[str, ...] = ()
        if token is not None:
            query += " WHERE token = ?"
            args = (token,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        out = []
        for row in rows:
            payload = json.loads(row["payload"])
            out.append(
                {
                    "id": row["id"],
                    "token": row["token"],
                    "received_at": row["received_at"],
                    "text": payload.get("text"),
                    "blocks": payload.get("blocks"),
                    "payload": payload,
                }
            )
        return out


class _Reject(Exception):
    def __init__(self, status: int, code: str) -> None:
        self.status = status
        self.code = code


def _plain(code: str, status: int, headers: dict[str, str] | None = None) -> Response:
    # Slack answers every webhook call as text/html with a bare code as the body.
    return Response(code, status_code=status, media_type="text/html", headers=headers)


def _special(token: str) -> tuple[int, str] | None:
    name = token.rsplit("/", 1)[-1]
    for word, answer in SPECIAL_TOKENS.items():
        if name == word or name.startswith(word + "-"):
            return answer
    return None


async def _payload(request: Request) -> dict[str, Any]:
    raw = await request.body()
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        values = parse_qs(raw.decode("utf-8", errors="replace")).get("payload")
        if not values:
            raise _Reject(400, "invalid_payload")
        raw = values[0].encode()
    try:
        data = json.loads(raw)
    except ValueError:
        raise _Reject(400, "invalid_payload") from None
    if not isinstance(data, dict):
        raise _Reject(400, "invalid_payload")
    return data


def _text_len(obj: Any) -> int:
    return len(obj.get("text", "")) if isinstance(obj, dict) else 0


def validate(payload: dict[str, Any]) -> None:
    """Reject what Slack rejects (the subset tminus could get wrong)."""
    text = payload.get("text")
    blocks = payload.get("blocks")
    if text is not None and not isinstance(text, str):
        raise _Reject(400, "invalid_payload")
    if not text and not blocks:
        raise _Reject(400, "no_text")
    if blocks is None:
        return
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        raise _Reject(400, "invalid_blocks")
    for block in blocks:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _Reject(400, "invalid_blocks")
        kind = block["type"]
        if kind == "header" and not 0 < _text_len(block.get("text")) <= HEADER_LIMIT:
            raise _Reject(400, "invalid_blocks")
        if kind == "section":
            fields = block.get("fields") or []
            if "text" not in block and not fields:
                raise _Reject(400, "invalid_blocks")
            if "text" in block and not 0 < _text_len(block["text"]) <= SECTION_LIMIT:
                raise _Reject(400, "invalid_blocks")
            if not isinstance(fields, list) or len(fields) > MAX_FIELDS:
                raise _Reject(400, "invalid_blocks")
            if any(not 0 < _text_len(f) <= FIELD_LIMIT for f in fields):
                raise _Reject(400, "invalid_blocks")


def _block_html(block: dict[str, Any]) -> str:
    e = html.escape
    kind = block.get("type")
    if kind == "header":
        return f"<h3>{e(str(block.get('text', {}).get('text', '')))}</h3>"
    if kind == "divider":
        return "<hr>"
    if kind == "section":
        parts = []
        if isinstance(block.get("text"), dict):
            parts.append(f"<pre>{e(str(block['text'].get('text', '')))}</pre>")
        fields = block.get("fields") or []
        if fields:
            cells = "".join(f"<td><pre>{e(str(f.get('text', '')))}</pre></td>" for f in fields)
            parts.append(f"<table><tr>{cells}</tr></table>")
        return "".join(parts)
    if kind == "context":
        texts = " · ".join(str(el.get("text", "")) for el in block.get("elements") or [])
        return f"<p><small>{e(texts)}</small></p>"
    return f"<pre>{e(json.dumps(block, indent=1))}</pre>"


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Slack stand-in</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
.msg{{border:1px solid #ddd;border-radius:.5rem;padding:0 1rem;margin:1rem 0}}
pre{{white-space:pre-wrap;margin:.3rem 0}} td{{vertical-align:top;padding-right:1rem}}</style>
</head><body><p><small>tminus sandbox: a stand-in for Slack incoming webhooks</small></p>
<h1>Messages received ({count})</h1>{body}</body></html>"""


def slack_routes(store: SlackStore) -> list[Route]:
    async def webhook(request: Request) -> Response:
        token = request.path_params["token"]
        special = _special(token) if token else (404, "no_service")
        if special:
            return _plain(special[1], special[0])
        try:
            payload = await _payload(request)
            validate(payload)
        except _Reject as exc:
            return _plain(exc.code, exc.status)
        if not store.take_slot(token):
            return _plain("rate_limited", 429, {"Retry-After": "1"})
        store.add(token, payload)
        return _plain("ok", 200)

    async def messages(request: Request) -> Response:
        return JSONResponse(store.messages(request.query_params.get("token")))

    async def page(request: Request) -> Response:
        rows = list(reversed(store.messages()))
        body = "".join(
            f'<div class="msg"><p><small>#{m["id"]} · {html.escape(m["received_at"])} · '
            f"webhook {html.escape(m['token'])}</small></p>"
            f"<p><b>{html.escape(str(m['text'] or ''))}</b></p>"
            + "".join(_block_html(b) for b in m["blocks"] or [] if isinstance(b, dict))
            + "</div>"
            for m in rows
        )
        return HTMLResponse(_PAGE.format(count=len(rows), body=body or "<p>None yet.</p>"))

    return [
        Route("/slack/webhook/{token:path}", webhook, methods=["POST"]),
        Route("/slack/messages", messages, methods=["GET"]),
        Route("/slack/", page, methods=["GET"]),
        Route("/slack", page, methods=["GET"]),
    ]
