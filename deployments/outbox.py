"""The webhook receiver's outbox: accepted deliveries in SQLite until Prefect has them.

GitLab does not redeliver by itself, so a delivery the receiver has answered 2xx must survive
anything that happens afterwards: Prefect being down, the receiver being killed. One table
holds every accepted delivery, keyed by its delivery key (which also makes de-duplication
durable: a resend an hour later, or after a restart, finds its row). WAL with
``synchronous=FULL`` means a row is on disk before the 202 goes out.

Rows are never deleted: an event is a few kilobytes (the receiver bounds every field and cuts
long release notes to an excerpt) and releases are rare, and the table doubles as the audit
log of what GitLab sent. ``status`` moves ``pending -> sent`` (or
``pending -> rejected`` when Prefect says the event itself is invalid, so one bad row cannot
block the queue; a person can set it back to ``pending``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_key TEXT NOT NULL UNIQUE,
    event_id     TEXT NOT NULL,
    event_json   TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'sent', 'rejected')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    created_at   TEXT NOT NULL,
    sent_at      TEXT
);
CREATE INDEX IF NOT EXISTS outbox_status_seq ON outbox (status, seq);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    delivery_key: str
    event_id: str
    event_json: str
    status: str
    attempts: int
    last_error: str | None
    created_at: str
    sent_at: str | None


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    rejected: int
    sent: int
    oldest_pending_seconds: float | None


class Outbox:
    """One SQLite connection, serialised by a lock; every method is blocking and short.

    The web app calls these through ``asyncio.to_thread`` so an fsync never stalls the event
    loop. One connection (not one per call) keeps the pragmas set once and the cost of an
    insert to one fsync.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        # Autocommit: every statement below is its own transaction, which is all we need.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def add(self, delivery_key: str, event_id: str, event_json: str) -> bool:
        """Store a delivery; False when its key is already stored (a resend)."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO outbox (delivery_key, event_id, event_json, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (delivery_key) DO NOTHING",
                (delivery_key, event_id, event_json, _now()),
            )
            return cur.rowcount == 1

    def add_many(self, rows: Sequence[tuple[str, str, str]]) -> list[bool]:
        """Store several deliveries (delivery key, event id, event JSON) in one transaction, so
        one fsync covers them all; per row, False when its key is already stored."""
        now = _now()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                added = [
                    self._conn.execute(
                        "INSERT INTO outbox (delivery_key, event_id, event_json, created_at)"
                        " VALUES (?, ?, ?, ?) ON CONFLICT (delivery_key) DO NOTHING",
                        (key, event_id, event_json, now),
                    ).rowcount
                    == 1
                    for key, event_id, event_json in rows
                ]
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return added

    def get(self, delivery_key: str) -> OutboxRow | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM outbox WHERE delivery_key = ?", (delivery_key,)
            ).fetchone()
        return OutboxRow(**dict(row)) if row else None

    def pending(self, limit: int = 100) -> list[OutboxRow]:
        """The oldest pending rows first: Prefect sees deliveries in the order GitLab sent them."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM outbox WHERE status = 'pending' ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [OutboxRow(**dict(r)) for r in rows]

    def mark_sent(self, seq: int) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1,"
                " last_error = NULL WHERE seq = ?",
                (_now(), seq),
            )

    def mark_sent_many(self, seqs: Sequence[int]) -> None:
        """Mark several rows sent in one transaction (one fsync)."""
        now = _now()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1,"
                    " last_error = NULL WHERE seq = ?",
                    [(now, seq) for seq in seqs],
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def mark_failed(self, seq: int, error: str, *, rejected: bool = False) -> None:
        """Count a failed attempt; the row stays pending unless Prefect rejected the event."""
        status = "rejected" if rejected else "pending"
        with self._lock:
            self._conn.execute(
                "UPDATE outbox SET status = ?, attempts = attempts + 1, last_error = ?"
                " WHERE seq = ? AND status = 'pending'",
                (status, error[:1000], seq),
            )

    def stats(self) -> OutboxStats:
        with self._lock:
            counts = dict(
                self._conn.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall()
            )
            oldest = self._conn.execute(
                "SELECT created_at FROM outbox WHERE status = 'pending' ORDER BY seq LIMIT 1"
            ).fetchone()
        age = None
        if oldest is not None:
            created = datetime.fromisoformat(oldest[0])
            age = max(0.0, (datetime.now(UTC) - created).total_seconds())
        return OutboxStats(
            pending=counts.get("pending", 0),
            rejected=counts.get("rejected", 0),
            sent=counts.get("sent", 0),
            oldest_pending_seconds=age,
        )
