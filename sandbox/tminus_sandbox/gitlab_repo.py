"""Repositories, merge requests, commit statuses and project hooks for the GitLab stand-in.

What "launches as code" needs of GitLab, over REST v4 shapes close enough for python-gitlab:

- a tiny git-like repository per project: commits are snapshots (path -> blob) with parents and
  40-hex ids; branches; files (JSON and raw); tree; compare (from the merge base by default,
  renames found as git finds them: same content, or at least half the lines alike);
- merge requests (open, edit, close, reopen, merge with a merge commit; a file changed on both
  sides differently cannot be merged) and their notes;
- commit statuses, one current status per (commit, name);
- project hooks: ``Push Hook`` and ``Merge Request Hook`` deliveries, sent in order by one
  background thread per app, each recorded in SQLite. Hooks may only point at 127.0.0.1 or
  localhost: the stand-in never sends traffic anywhere else.

Control endpoints (``/_sandbox/gitlab/hook_deliveries``): the delivery log, a resend, and a flush
that waits until every queued delivery has been attempted.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import queue
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tminus_sandbox.gitlab import (
    _PAGE,
    BOT_USERNAME,
    ApiError,
    GitLabApi,
    GitLabStore,
    _esc,
    _guard,
    _now,
    _user_json,
)

REPO_SCHEMA = """
CREATE TABLE IF NOT EXISTS repo_blobs (sha TEXT PRIMARY KEY, content BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS repo_commits (
  seq INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, sha TEXT NOT NULL, parents TEXT NOT NULL,
  tree TEXT NOT NULL, message TEXT NOT NULL, author_name TEXT NOT NULL,
  author_email TEXT NOT NULL, created_at TEXT NOT NULL, UNIQUE (project_id, sha));
CREATE TABLE IF NOT EXISTS repo_branches (
  project_id INTEGER NOT NULL, name TEXT NOT NULL, sha TEXT NOT NULL,
  PRIMARY KEY (project_id, name));
CREATE TABLE IF NOT EXISTS merge_requests (
  id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, iid INTEGER NOT NULL,
  title TEXT NOT NULL, description TEXT NOT NULL, state TEXT NOT NULL,
  source_branch TEXT NOT NULL, target_branch TEXT NOT NULL, author_id INTEGER,
  head_sha TEXT, base_sha TEXT, start_sha TEXT, merge_commit_sha TEXT,
  created_at TEXT NOT NULL, updated_at TEXT NOT NULL, closed_at TEXT, merged_at TEXT,
  UNIQUE (project_id, iid));
CREATE TABLE IF NOT EXISTS mr_notes (
  id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, mr_iid INTEGER NOT NULL,
  body TEXT NOT NULL, author_id INTEGER, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commit_statuses (
  id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, sha TEXT NOT NULL, name TEXT NOT NULL,
  status TEXT NOT NULL, description TEXT, target_url TEXT, ref TEXT, author_id INTEGER,
  created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT,
  UNIQUE (project_id, sha, name));
CREATE TABLE IF NOT EXISTS project_hooks (
  id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, url TEXT NOT NULL, token TEXT,
  push_events INTEGER NOT NULL, merge_requests_events INTEGER NOT NULL,
  releases_events INTEGER NOT NULL, tag_push_events INTEGER NOT NULL,
  created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hook_deliveries (
  id INTEGER PRIMARY KEY, hook_id INTEGER NOT NULL, project_id INTEGER NOT NULL,
  url TEXT NOT NULL, event TEXT NOT NULL, payload TEXT NOT NULL, request_headers TEXT NOT NULL,
  response_status INTEGER, response_body TEXT, error TEXT, duration_ms REAL,
  event_uuid TEXT NOT NULL, webhook_uuid TEXT NOT NULL, idempotency_key TEXT NOT NULL,
  resend_of INTEGER, created_at TEXT NOT NULL);
"""

REPO_TABLES = (
    "repo_blobs",
    "repo_commits",
    "repo_branches",
    "merge_requests",
    "mr_notes",
    "commit_statuses",
    "project_hooks",
    "hook_deliveries",
)

DEFAULT_BRANCH = "main"
NO_COMMIT = "0" * 40
FILE_MODE = "100644"
TREE_MODE = "040000"
STATUS_STATES = ("pending", "running", "success", "failed", "canceled")
HOOK_HOSTS = ("127.0.0.1", "localhost")
USER_AGENT = "GitLab/18.6.0"
MAX_PUSH_COMMITS = 20
RESPONSE_EXCERPT = 2000
SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")

Tree = dict[str, str]  # path -> blob sha


def _api_error(status: int, body: dict[str, Any]) -> ApiError:
    err = ApiError(status, "")
    err.body = body
    return err


def blob_sha(content: bytes) -> str:
    """git's blob id, so blob_id looks like GitLab's."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _hook_time(iso: str) -> str:
    """``2013-12-03 17:23:34 UTC``, the merge request hook's time format."""
    return _parse(iso).strftime("%Y-%m-%d %H:%M:%S UTC")


def _push_time(iso: str) -> str:
    return _parse(iso).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _parse(iso: str) -> datetime:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _flag(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def hook_url_allowed(url: str) -> bool:
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.hostname in HOOK_HOSTS and port_ok


# --- storage ---------------------------------------------------------------------------------


class RepoStore:
    """The repository tables, in the GitLab stand-in's SQLite file (its lock and transactions)."""

    def __init__(self, gitlab: GitLabStore) -> None:
        self.gitlab = gitlab
        self._local = threading.local()
        with gitlab._lock:
            gitlab._db.executescript(REPO_SCHEMA)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """The stand-in's transaction; nested calls (same thread) join the outer one."""
        if getattr(self._local, "depth", 0):
            yield self.gitlab._db
            return
        self._local.depth = 1
        try:
            with self.gitlab.tx() as db:
                yield db
        finally:
            self._local.depth = 0

    def user_by_id(self, uid: int | None) -> sqlite3.Row | None:
        if uid is None:
            return None
        with self.tx() as db:
            row: sqlite3.Row | None = db.execute(
                "SELECT * FROM users WHERE id = ?", (uid,)
            ).fetchone()
        return row

    def reset(self) -> None:
        with self.tx() as db:
            for table in REPO_TABLES:
                db.execute(f"DELETE FROM {table}")

    # commits and refs

    def commit(self, db: sqlite3.Connection, pid: int, sha: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = db.execute(
            "SELECT * FROM repo_commits WHERE project_id = ? AND sha = ?", (pid, sha)
        ).fetchone()
        return row

    def branch(self, db: sqlite3.Connection, pid: int, name: str) -> str | None:
        row = db.execute(
            "SELECT sha FROM repo_branches WHERE project_id = ? AND name = ?", (pid, name)
        ).fetchone()
        return str(row["sha"]) if row else None

    def resolve(self, db: sqlite3.Connection, pid: int, ref: str) -> sqlite3.Row | None:
        """A branch name, or a (possibly abbreviated) commit id, to its commit."""
        sha = self.branch(db, pid, ref)
        if sha is not None:
            return self.commit(db, pid, sha)
        if SHA_RE.match(ref):
            rows = db.execute(
                "SELECT * FROM repo_commits WHERE project_id = ? AND sha LIKE ? LIMIT 2",
                (pid, ref + "%"),
            ).fetchall()
            if len(rows) == 1:
                row: sqlite3.Row = rows[0]
                return row
        return None

    def tree(self, row: sqlite3.Row | None) -> Tree:
        if row is None:
            return {}
        tree: Tree = json.loads(row["tree"])
        return tree

    def blob(self, db: sqlite3.Connection, sha: str) -> bytes:
        row = db.execute("SELECT content FROM repo_blobs WHERE sha = ?", (sha,)).fetchone()
        return bytes(row["content"]) if row else b""

    def put_blob(self, db: sqlite3.Connection, content: bytes) -> str:
        sha = blob_sha(content)
        db.execute("INSERT OR IGNORE INTO repo_blobs (sha, content) VALUES (?, ?)", (sha, content))
        return sha

    def ancestors(self, db: sqlite3.Connection, pid: int, sha: str) -> dict[str, sqlite3.Row]:
        """Every commit reachable from ``sha`` (itself included), by id."""
        seen: dict[str, sqlite3.Row] = {}
        todo = [sha]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            row = self.commit(db, pid, current)
            if row is None:
                continue
            seen[current] = row
            todo.extend(json.loads(row["parents"]))
        return seen

    def merge_base(self, db: sqlite3.Connection, pid: int, a: str, b: str) -> str | None:
        """The newest common ancestor: no other common ancestor descends from it."""
        common = self.ancestors(db, pid, a).keys() & self.ancestors(db, pid, b).keys()
        if not common:
            return None
        rows = [row for row in (self.commit(db, pid, sha) for sha in common) if row is not None]
        return str(max(rows, key=lambda r: int(r["seq"]))["sha"])

    def new_commit(
        self,
        db: sqlite3.Connection,
        pid: int,
        parents: list[str],
        tree: Tree,
        message: str,
        author_name: str,
        author_email: str,
    ) -> sqlite3.Row:
        seq = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM repo_commits").fetchone()[0]
        now = _now()
        ident = json.dumps([pid, seq, parents, tree, message, author_name, author_email, now])
        sha = hashlib.sha1(ident.encode()).hexdigest()
        db.execute(
            "INSERT INTO repo_commits (seq, project_id, sha, parents, tree, message, author_name, "
            "author_email, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, pid, sha, json.dumps(parents), json.dumps(tree), message, author_name,
             author_email, now),
        )  # fmt: skip
        row = self.commit(db, pid, sha)
        assert row is not None
        return row

    def set_branch(self, db: sqlite3.Connection, pid: int, name: str, sha: str) -> None:
        db.execute(
            "INSERT INTO repo_branches (project_id, name, sha) VALUES (?, ?, ?) "
            "ON CONFLICT (project_id, name) DO UPDATE SET sha = excluded.sha",
            (pid, name, sha),
        )


# --- diffs -----------------------------------------------------------------------------------


@dataclass
class FileDiff:
    old_path: str
    new_path: str
    old_blob: str | None
    new_blob: str | None

    @property
    def new_file(self) -> bool:
        return self.old_blob is None

    @property
    def deleted_file(self) -> bool:
        return self.new_blob is None

    @property
    def renamed_file(self) -> bool:
        return (
            self.old_blob is not None
            and self.new_blob is not None
            and (self.old_path != self.new_path)
        )


def _text(content: bytes) -> str:
    return content.decode("utf-8", errors="replace")


def tree_diff(old: Tree, new: Tree, blob: Callable[[str], bytes]) -> list[FileDiff]:
    """What changed from ``old`` to ``new``, renames paired as git pairs them: an identical
    blob first, then the most similar (at least half alike) of the remaining adds."""
    diffs: list[FileDiff] = []
    removed = sorted(p for p in old if p not in new)
    added = sorted(p for p in new if p not in old)
    for path in sorted(p for p in old if p in new and old[p] != new[p]):
        diffs.append(FileDiff(path, path, old[path], new[path]))
    pairs: list[tuple[str, str]] = []
    for path in list(removed):
        same = next((a for a in added if new[a] == old[path]), None)
        if same is not None:
            pairs.append((path, same))
            removed.remove(path)
            added.remove(same)
    for path in list(removed):
        old_lines = _text(blob(old[path])).splitlines()
        best, score = None, 0.5
        for candidate in added:
            ratio = difflib.SequenceMatcher(
                None, old_lines, _text(blob(new[candidate])).splitlines()
            ).ratio()
            if ratio >= score:
                best, score = candidate, ratio
        if best is not None:
            pairs.append((path, best))
            removed.remove(path)
            added.remove(best)
    diffs += [FileDiff(a, b, old[a], new[b]) for a, b in pairs]
    diffs += [FileDiff(p, p, old[p], None) for p in removed]
    diffs += [FileDiff(p, p, None, new[p]) for p in added]
    return sorted(diffs, key=lambda d: d.new_path)


def unified(old: bytes, new: bytes) -> str:
    """GitLab's ``diff`` text: hunks only, no ``---``/``+++`` header."""
    a = _text(old).splitlines(keepends=True)
    b = _text(new).splitlines(keepends=True)
    lines = list(difflib.unified_diff(a, b, lineterm="\n"))[2:]
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


# --- hook deliveries -------------------------------------------------------------------------


@dataclass
class Delivery:
    hook_id: int
    project_id: int
    url: str
    token: str | None
    event: str  # the X-Gitlab-Event header
    payload: dict[str, Any]
    event_uuid: str
    idempotency_key: str
    instance: str
    generation: int = 0
    resend_of: int | None = None


@dataclass
class HookDispatcher:
    """One worker thread per app sends queued deliveries in order and records each."""

    store: RepoStore
    timeout: float = 10.0
    _queue: queue.Queue[Delivery] = field(default_factory=queue.Queue)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _generation: int = 0

    def enqueue(self, deliveries: Iterable[Delivery]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="gitlab-hooks", daemon=True)
                self._thread.start()
            for delivery in deliveries:
                delivery.generation = self._generation
                self._queue.put(delivery)

    def _run(self) -> None:
        while True:
            delivery = self._queue.get()
            try:
                if delivery.generation == self._generation:
                    self.deliver(delivery)
            except Exception:  # a delivery never stops the worker; deliver() records errors
                pass
            finally:
                self._queue.task_done()

    def wait(self, timeout: float) -> bool:
        """Until every queued delivery has been attempted; False when ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def clear(self) -> None:
        """Forget queued deliveries (one in flight is not recorded)."""
        self._generation += 1
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
            self._queue.task_done()

    def deliver(self, delivery: Delivery) -> int:
        """Send one delivery now and record it; returns the record's id."""
        webhook_uuid = str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Gitlab-Event": delivery.event,
            "X-Gitlab-Event-UUID": delivery.event_uuid,
            "X-Gitlab-Webhook-UUID": webhook_uuid,
            "Idempotency-Key": delivery.idempotency_key,
            "X-Gitlab-Instance": delivery.instance,
        }
        if delivery.token:
            headers["X-Gitlab-Token"] = delivery.token
        status: int | None = None
        body: str | None = None
        error: str | None = None
        started = time.perf_counter()
        if not hook_url_allowed(delivery.url):
            error = "refused: the sandbox delivers hooks only to 127.0.0.1 or localhost"
        else:
            try:
                with httpx.Client(
                    timeout=self.timeout, follow_redirects=False, trust_env=False
                ) as client:
                    response = client.post(
                        delivery.url, content=json.dumps(delivery.payload), headers=headers
                    )
                status = response.status_code
                body = response.text[:RESPONSE_EXCERPT]
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
        ms = (time.perf_counter() - started) * 1000
        if delivery.generation != self._generation:
            return 0  # the sandbox was reset while this was in flight
        recorded = dict(headers)
        if "X-Gitlab-Token" in recorded:
            recorded["X-Gitlab-Token"] = "[REDACTED]"
        with self.store.tx() as db:
            cur = db.execute(
                "INSERT INTO hook_deliveries (hook_id, project_id, url, event, payload, "
                "request_headers, response_status, response_body, error, duration_ms, "
                "event_uuid, webhook_uuid, idempotency_key, resend_of, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    delivery.hook_id,
                    delivery.project_id,
                    delivery.url,
                    delivery.event,
                    json.dumps(delivery.payload),
                    json.dumps(recorded),
                    status,
                    body,
                    error,
                    round(ms, 3),
                    delivery.event_uuid,
                    webhook_uuid,
                    delivery.idempotency_key,
                    delivery.resend_of,
                    _now(),
                ),
            )
        return int(cur.lastrowid or 0)


def delivery_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "hook_id": row["hook_id"],
        "project_id": row["project_id"],
        "url": row["url"],
        "event": row["event"],
        "payload": json.loads(row["payload"]),
        "request_headers": json.loads(row["request_headers"]),
        "response_status": row["response_status"],
        "response_body": row["response_body"],
        "error": row["error"],
        "duration_ms": row["duration_ms"],
        "event_uuid": row["event_uuid"],
        "webhook_uuid": row["webhook_uuid"],
        "idempotency_key": row["idempotency_key"],
        "resend_of": row["resend_of"],
        "created_at": row["created_at"],
    }


# --- the API ---------------------------------------------------------------------------------


class RepoApi:
    """Route handlers for repositories, merge requests, statuses and hooks."""

    def __init__(self, api: GitLabApi, store: RepoStore, hooks: HookDispatcher) -> None:
        self.api = api
        self.gitlab = api.store
        self.store = store
        self.hooks = hooks

    # --- helpers ---

    def _project(self, request: Request) -> sqlite3.Row:
        return self.gitlab.project(request.path_params["project"])

    @staticmethod
    def _base(request: Request) -> str:
        return GitLabApi._base(request)

    def _bot(self) -> sqlite3.Row:
        with self.store.tx() as db:
            bot: sqlite3.Row | None = db.execute(
                "SELECT * FROM users WHERE username = ?", (BOT_USERNAME,)
            ).fetchone()
        if bot is None:
            bot = self.gitlab.user(BOT_USERNAME, create=True)
        assert bot is not None
        return bot

    @staticmethod
    def _email(user: sqlite3.Row) -> str:
        return f"{user['username']}@example.com"

    def _web(self, project: sqlite3.Row, base: str) -> str:
        return f"{base}/{project['path']}"

    def _commit_json(self, row: sqlite3.Row, project: sqlite3.Row, base: str) -> dict[str, Any]:
        message = row["message"]
        return {
            "id": row["sha"],
            "short_id": row["sha"][:8],
            "title": message.split("\n", 1)[0],
            "message": message,
            "parent_ids": json.loads(row["parents"]),
            "author_name": row["author_name"],
            "author_email": row["author_email"],
            "authored_date": row["created_at"],
            "committer_name": row["author_name"],
            "committer_email": row["author_email"],
            "committed_date": row["created_at"],
            "created_at": row["created_at"],
            "trailers": {},
            "extended_trailers": {},
            "web_url": f"{self._web(project, base)}/-/commit/{row['sha']}",
        }

    def _ref_commit(
        self, db: sqlite3.Connection, project: sqlite3.Row, ref: str | None
    ) -> sqlite3.Row:
        row = self.store.resolve(db, project["id"], ref or DEFAULT_BRANCH)
        if row is None:
            raise ApiError(404, "404 Commit Not Found")
        return row

    @staticmethod
    def _path_param(request: Request, name: str) -> str:
        return unquote(request.path_params[name])

    # --- commits ---

    async def create_commit(self, request: Request) -> Response:
        project = self._project(request)
        pid = project["id"]
        body = await self.api._body(request)
        branch = str(body.get("branch") or "").strip()
        message = str(body.get("commit_message") or "")
        actions = body.get("actions")
        for name, value in (("branch", branch), ("commit_message", message), ("actions", actions)):
            if not value:
                raise ApiError(400, f"{name} is missing", "error")
        if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
            raise ApiError(400, "actions is invalid", "error")
        bot = self._bot()
        author_name = str(body.get("author_name") or bot["username"])
        author_email = str(body.get("author_email") or self._email(bot))
        base = self._base(request)
        with self.store.tx() as db:
            before = self.store.branch(db, pid, branch)
            parent = before
            if before is None:
                start = body.get("start_sha") or body.get("start_branch")
                if start:
                    start_row = self.store.resolve(db, pid, str(start))
                    if start_row is None:
                        raise ApiError(400, f"Invalid reference name: {start}")
                    parent = start_row["sha"]
                elif db.execute(
                    "SELECT 1 FROM repo_branches WHERE project_id = ?", (pid,)
                ).fetchone():
                    raise ApiError(
                        400,
                        f"A branch called '{branch}' does not exist; "
                        "give start_branch or start_sha to create it",
                    )
            tree = dict(self.store.tree(self.store.commit(db, pid, parent) if parent else None))
            for action in actions:
                self._apply(db, tree, action)
            row = self.store.new_commit(
                db, pid, [parent] if parent else [], tree, message, author_name, author_email
            )
            self.store.set_branch(db, pid, branch, row["sha"])
            stats = self._stats(db, self.store.tree(self.store.commit(db, pid, parent or "")), tree)
        self._after_push(project, branch, before, row["sha"], base)
        data = self._commit_json(row, project, base)
        data.update(stats=stats, status=None, last_pipeline=None, project_id=pid)
        return JSONResponse(data, status_code=201)

    def _apply(self, db: sqlite3.Connection, tree: Tree, action: dict[str, Any]) -> None:
        kind = action.get("action")
        path = str(action.get("file_path") or "").strip("/")
        if kind not in ("create", "update", "delete", "move", "chmod"):
            raise ApiError(400, "actions[action] does not have a valid value", "error")
        if not path:
            raise ApiError(400, "actions[file_path] is missing", "error")
        content: bytes | None = None
        if action.get("content") is not None:
            raw = action["content"]
            if action.get("encoding") == "base64":
                try:
                    content = base64.b64decode(str(raw), validate=True)
                except ValueError:
                    raise ApiError(400, "content is not valid base64", "error") from None
            else:
                content = str(raw).encode()
        if kind == "create":
            if path in tree or any(p.startswith(path + "/") for p in tree):
                raise ApiError(400, "A file with this name already exists")
            tree[path] = self.store.put_blob(db, content or b"")
        elif kind == "update":
            if path not in tree:
                raise ApiError(400, "A file with this name doesn't exist")
            tree[path] = self.store.put_blob(db, content or b"")
        elif kind == "delete":
            if path not in tree:
                raise ApiError(400, "A file with this name doesn't exist")
            del tree[path]
        elif kind == "move":
            previous = str(action.get("previous_path") or "").strip("/")
            if not previous:
                raise ApiError(400, "actions[previous_path] is missing", "error")
            if previous not in tree:
                raise ApiError(400, "A file with this name doesn't exist")
            if path in tree and path != previous:
                raise ApiError(400, "A file with this name already exists")
            blob = tree.pop(previous)
            tree[path] = self.store.put_blob(db, content) if content is not None else blob
        elif path not in tree:  # chmod: modes are not kept
            raise ApiError(400, "A file with this name doesn't exist")

    def _stats(self, db: sqlite3.Connection, old: Tree, new: Tree) -> dict[str, int]:
        additions = deletions = 0
        for d in tree_diff(old, new, lambda sha: self.store.blob(db, sha)):
            text = unified(
                self.store.blob(db, d.old_blob) if d.old_blob else b"",
                self.store.blob(db, d.new_blob) if d.new_blob else b"",
            )
            for line in text.splitlines():
                if line.startswith("+"):
                    additions += 1
                elif line.startswith("-"):
                    deletions += 1
        return {"additions": additions, "deletions": deletions, "total": additions + deletions}

    async def get_commit(self, request: Request) -> Response:
        project = self._project(request)
        with self.store.tx() as db:
            row = self._ref_commit(db, project, self._path_param(request, "sha"))
            parents = json.loads(row["parents"])
            old = (
                self.store.tree(self.store.commit(db, project["id"], parents[0])) if parents else {}
            )
            stats = self._stats(db, old, self.store.tree(row))
        data = self._commit_json(row, project, self._base(request))
        data.update(stats=stats, status=None, last_pipeline=None, project_id=project["id"])
        return JSONResponse(data)

    async def list_commits(self, request: Request) -> Response:
        project = self._project(request)
        ref = request.query_params.get("ref_name")
        with self.store.tx() as db:
            if ref is None and self.store.branch(db, project["id"], DEFAULT_BRANCH) is None:
                rows: list[sqlite3.Row] = []
            else:
                head = self._ref_commit(db, project, ref)
                rows = sorted(
                    self.store.ancestors(db, project["id"], head["sha"]).values(),
                    key=lambda r: r["seq"],
                    reverse=True,
                )
        base = self._base(request)
        return self.api._paginate(request, rows, lambda r: self._commit_json(r, project, base))

    # --- branches ---

    def _branch_json(
        self, name: str, commit: sqlite3.Row, project: sqlite3.Row, base: str
    ) -> dict[str, Any]:
        return {
            "name": name,
            "commit": self._commit_json(commit, project, base),
            "merged": False,
            "protected": name == DEFAULT_BRANCH,
            "developers_can_push": False,
            "developers_can_merge": False,
            "can_push": True,
            "default": name == DEFAULT_BRANCH,
            "web_url": f"{self._web(project, base)}/-/tree/{quote(name)}",
        }

    async def list_branches(self, request: Request) -> Response:
        project = self._project(request)
        search = request.query_params.get("search") or ""
        with self.store.tx() as db:
            rows = db.execute(
                "SELECT b.name, c.* FROM repo_branches b JOIN repo_commits c "
                "ON c.project_id = b.project_id AND c.sha = b.sha "
                "WHERE b.project_id = ? AND instr(b.name, ?) > 0 ORDER BY b.name",
                (project["id"], search),
            ).fetchall()
        base = self._base(request)
        return self.api._paginate(
            request, rows, lambda r: self._branch_json(r["name"], r, project, base)
        )

    async def get_branch(self, request: Request) -> Response:
        project = self._project(request)
        name = self._path_param(request, "branch")
        with self.store.tx() as db:
            sha = self.store.branch(db, project["id"], name)
            row = self.store.commit(db, project["id"], sha) if sha else None
        if row is None:
            raise ApiError(404, "404 Branch Not Found")
        return JSONResponse(self._branch_json(name, row, project, self._base(request)))

    async def create_branch(self, request: Request) -> Response:
        project = self._project(request)
        body = await self.api._body(request)
        name = str(body.get("branch") or "").strip()
        ref = str(body.get("ref") or "").strip()
        if not name:
            raise ApiError(400, "branch is missing", "error")
        if not ref:
            raise ApiError(400, "ref is missing", "error")
        if name.startswith(("-", "/")) or ".." in name or " " in name or name.endswith("/"):
            raise ApiError(400, "Branch name is invalid")
        with self.store.tx() as db:
            if self.store.branch(db, project["id"], name) is not None:
                raise ApiError(400, "Branch already exists")
            row = self.store.resolve(db, project["id"], ref)
            if row is None:
                raise ApiError(400, "Invalid reference name: " + ref)
            self.store.set_branch(db, project["id"], name, row["sha"])
        base = self._base(request)
        self._after_push(project, name, None, row["sha"], base)
        return JSONResponse(self._branch_json(name, row, project, base), status_code=201)

    # --- files and tree ---

    def _file(self, request: Request) -> tuple[sqlite3.Row, sqlite3.Row, str, str, bytes]:
        project = self._project(request)
        path = self._path_param(request, "file_path").strip("/")
        ref = request.query_params.get("ref")
        with self.store.tx() as db:
            row = self._ref_commit(db, project, ref)
            blob = self.store.tree(row).get(path)
            if blob is None:
                raise ApiError(404, "404 File Not Found")
            content = self.store.blob(db, blob)
        return project, row, path, blob, content

    def _last_commit(self, pid: int, row: sqlite3.Row, path: str) -> str:
        """The newest commit (first parents back from ``row``) that set the file as it is."""
        with self.store.tx() as db:
            blob = self.store.tree(row).get(path)
            current = row
            while True:
                parents = json.loads(current["parents"])
                parent = self.store.commit(db, pid, parents[0]) if parents else None
                if parent is None or self.store.tree(parent).get(path) != blob:
                    return str(current["sha"])
                current = parent

    async def get_file(self, request: Request) -> Response:
        if not request.query_params.get("ref"):
            raise ApiError(400, "ref is missing", "error")
        project, row, path, blob, content = self._file(request)
        return JSONResponse(
            {
                "file_name": path.rsplit("/", 1)[-1],
                "file_path": path,
                "size": len(content),
                "encoding": "base64",
                "content": base64.b64encode(content).decode(),
                "content_sha256": hashlib.sha256(content).hexdigest(),
                "ref": request.query_params["ref"],
                "blob_id": blob,
                "commit_id": row["sha"],
                "last_commit_id": self._last_commit(project["id"], row, path),
                "execute_filemode": False,
            }
        )

    async def raw_file(self, request: Request) -> Response:
        project, row, path, blob, content = self._file(request)
        return Response(
            content,
            media_type="text/plain; charset=utf-8",
            headers={
                "X-Gitlab-Blob-Id": blob,
                "X-Gitlab-Commit-Id": row["sha"],
                "X-Gitlab-File-Name": path.rsplit("/", 1)[-1],
                "X-Gitlab-File-Path": quote(path),
                "X-Gitlab-Size": str(len(content)),
                "X-Gitlab-Last-Commit-Id": self._last_commit(project["id"], row, path),
            },
        )

    async def tree(self, request: Request) -> Response:
        project = self._project(request)
        q = request.query_params
        folder = (q.get("path") or "").strip("/")
        recursive = _flag(q.get("recursive"), False)
        with self.store.tx() as db:
            row = self.store.resolve(db, project["id"], q.get("ref") or DEFAULT_BRANCH)
            if row is None:
                raise ApiError(404, "404 Tree Not Found")
        tree = self.store.tree(row)
        prefix = folder + "/" if folder else ""
        under = {p: b for p, b in tree.items() if p.startswith(prefix)}
        if folder and not under:
            raise ApiError(404, "404 Tree Not Found")
        trees: dict[str, Tree] = {}
        blobs: list[tuple[str, str]] = []
        for path, sha in under.items():
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                sub = prefix + "/".join(parts[:depth])
                if depth == 1 or recursive:
                    trees.setdefault(sub, {})
            if len(parts) == 1 or recursive:
                blobs.append((path, sha))
        for sub in trees:
            trees[sub] = {p: b for p, b in tree.items() if p.startswith(sub + "/")}

        def tree_id(entries: Tree) -> str:
            return hashlib.sha1(json.dumps(sorted(entries.items())).encode()).hexdigest()

        items = [
            {"id": tree_id(entries), "name": sub.rsplit("/", 1)[-1], "type": "tree",
             "path": sub, "mode": TREE_MODE}
            for sub, entries in sorted(trees.items())
        ] + [
            {"id": sha, "name": path.rsplit("/", 1)[-1], "type": "blob", "path": path,
             "mode": FILE_MODE}
            for path, sha in sorted(blobs)
        ]  # fmt: skip
        return self.api._paginate(request, items)

    # --- compare ---

    def _diffs(self, db: sqlite3.Connection, old: Tree, new: Tree) -> list[dict[str, Any]]:
        out = []
        for d in tree_diff(old, new, lambda sha: self.store.blob(db, sha)):
            out.append(
                {
                    "old_path": d.old_path,
                    "new_path": d.new_path,
                    "a_mode": "0" if d.new_file else FILE_MODE,
                    "b_mode": "0" if d.deleted_file else FILE_MODE,
                    "new_file": d.new_file,
                    "renamed_file": d.renamed_file,
                    "deleted_file": d.deleted_file,
                    "generated_file": False,
                    "diff": unified(
                        self.store.blob(db, d.old_blob) if d.old_blob else b"",
                        self.store.blob(db, d.new_blob) if d.new_blob else b"",
                    ),
                }
            )
        return out

    async def compare(self, request: Request) -> Response:
        project = self._project(request)
        pid = project["id"]
        q = request.query_params
        if not q.get("from"):
            raise ApiError(400, "from is missing", "error")
        if not q.get("to"):
            raise ApiError(400, "to is missing", "error")
        straight = _flag(q.get("straight"), False)
        base = self._base(request)
        with self.store.tx() as db:
            frm = self._ref_commit(db, project, q["from"])
            to = self._ref_commit(db, project, q["to"])
            start: sqlite3.Row | None = frm
            if not straight:
                merge_base = self.store.merge_base(db, pid, frm["sha"], to["sha"])
                start = self.store.commit(db, pid, merge_base) if merge_base else None
            reachable_from = self.store.ancestors(db, pid, frm["sha"])
            commits = sorted(
                (r for s, r in self.store.ancestors(db, pid, to["sha"]).items()
                 if s not in reachable_from),
                key=lambda r: r["seq"],
            )  # fmt: skip
            diffs = self._diffs(db, self.store.tree(start), self.store.tree(to))
        same = frm["sha"] == to["sha"]
        return JSONResponse(
            {
                "commit": self._commit_json(to, project, base) if commits else None,
                "commits": [self._commit_json(r, project, base) for r in commits],
                "diffs": diffs,
                "compare_timeout": False,
                "compare_same_ref": same,
                "web_url": f"{self._web(project, base)}/-/compare/{frm['sha']}...{to['sha']}",
            }
        )

    # --- events ---

    def _project_hook(self, project: sqlite3.Row, base: str) -> dict[str, Any]:
        path = project["path"]
        web = self._web(project, base)
        host = urlsplit(base).hostname or "127.0.0.1"
        ssh = f"git@{host}:{path}.git"
        return {
            "id": project["id"],
            "name": path.rsplit("/", 1)[-1],
            "description": "",
            "web_url": web,
            "avatar_url": None,
            "git_ssh_url": ssh,
            "git_http_url": f"{web}.git",
            "namespace": path.rsplit("/", 1)[0] if "/" in path else path,
            "visibility_level": 0,
            "path_with_namespace": path,
            "default_branch": DEFAULT_BRANCH,
            "ci_config_path": None,
            "homepage": web,
            "url": ssh,
            "ssh_url": ssh,
            "http_url": f"{web}.git",
        }

    def _repository_hook(self, project: sqlite3.Row, base: str) -> dict[str, Any]:
        p = self._project_hook(project, base)
        return {
            "name": p["name"],
            "url": p["url"],
            "description": "",
            "homepage": p["homepage"],
            "git_http_url": p["git_http_url"],
            "git_ssh_url": p["git_ssh_url"],
            "visibility_level": 0,
        }

    def _commit_hook(
        self, db: sqlite3.Connection, row: sqlite3.Row, project: sqlite3.Row, base: str
    ) -> dict[str, Any]:
        parents = json.loads(row["parents"])
        old = self.store.tree(self.store.commit(db, project["id"], parents[0])) if parents else {}
        new = self.store.tree(row)
        message = row["message"]
        return {
            "id": row["sha"],
            "message": message,
            "title": message.split("\n", 1)[0],
            "timestamp": _push_time(row["created_at"]),
            "url": f"{self._web(project, base)}/-/commit/{row['sha']}",
            "author": {"name": row["author_name"], "email": row["author_email"]},
            "added": sorted(p for p in new if p not in old),
            "modified": sorted(p for p in new if p in old and old[p] != new[p]),
            "removed": sorted(p for p in old if p not in new),
        }

    def _hooks_for(self, pid: int, flag: str) -> list[sqlite3.Row]:
        assert flag in ("push_events", "merge_requests_events")
        with self.store.tx() as db:
            return db.execute(
                f"SELECT * FROM project_hooks WHERE project_id = ? AND {flag} = 1 ORDER BY id",
                (pid,),
            ).fetchall()

    def _emit(
        self, project: sqlite3.Row, flag: str, event: str, payload: dict[str, Any], base: str
    ) -> None:
        hooks = self._hooks_for(project["id"], flag)
        if not hooks:
            return
        event_uuid = str(uuid.uuid4())
        self.hooks.enqueue(
            Delivery(
                hook_id=h["id"],
                project_id=project["id"],
                url=h["url"],
                token=h["token"],
                event=event,
                payload=payload,
                event_uuid=event_uuid,
                idempotency_key=str(uuid.uuid4()),
                instance=base,
            )
            for h in hooks
        )

    def _push_event(
        self, project: sqlite3.Row, branch: str, before: str | None, after: str, base: str
    ) -> None:
        if not self._hooks_for(project["id"], "push_events"):
            return
        pid = project["id"]
        with self.store.tx() as db:
            new = self.store.ancestors(db, pid, after)
            if before is None:
                # A new branch: the commits no other branch has (none when made from a ref).
                for (sha,) in db.execute(
                    "SELECT sha FROM repo_branches WHERE project_id = ? AND name != ?",
                    (pid, branch),
                ).fetchall():
                    for seen in self.store.ancestors(db, pid, sha):
                        new.pop(seen, None)
            else:
                for seen in self.store.ancestors(db, pid, before):
                    new.pop(seen, None)
            rows = sorted(new.values(), key=lambda r: r["seq"])
            commits = [self._commit_hook(db, r, project, base) for r in rows[-MAX_PUSH_COMMITS:]]
        bot = self._bot()
        payload = {
            "object_kind": "push",
            "event_name": "push",
            "before": before or NO_COMMIT,
            "after": after,
            "ref": f"refs/heads/{branch}",
            "ref_protected": branch == DEFAULT_BRANCH,
            "checkout_sha": after,
            "message": None,
            "user_id": bot["id"],
            "user_name": bot["username"],
            "user_username": bot["username"],
            "user_email": self._email(bot),
            "user_avatar": None,
            "project_id": pid,
            "project": self._project_hook(project, base),
            "commits": commits,
            "total_commits_count": len(rows),
            "push_options": {},
            "repository": self._repository_hook(project, base),
        }
        self._emit(project, "push_events", "Push Hook", payload, base)

    def _after_push(
        self, project: sqlite3.Row, branch: str, before: str | None, after: str, base: str
    ) -> None:
        """A branch moved: its Push Hook, then an update of each open merge request from it."""
        self._push_event(project, branch, before, after, base)
        if before is None or before == after:
            return
        with self.store.tx() as db:
            mrs = db.execute(
                "SELECT * FROM merge_requests WHERE project_id = ? AND source_branch = ? "
                "AND state = 'opened' ORDER BY iid",
                (project["id"], branch),
            ).fetchall()
            for mr in mrs:
                db.execute(
                    "UPDATE merge_requests SET head_sha = ?, updated_at = ? WHERE id = ?",
                    (after, _now(), mr["id"]),
                )
        for mr in mrs:
            self._mr_event(project, mr["iid"], "update", base, oldrev=before)

    # --- merge requests ---

    def _mr(self, db: sqlite3.Connection, pid: int, iid: int) -> sqlite3.Row:
        row: sqlite3.Row | None = db.execute(
            "SELECT * FROM merge_requests WHERE project_id = ? AND iid = ?", (pid, iid)
        ).fetchone()
        if row is None:
            raise ApiError(404, "404 Not found")
        return row

    def _mr_refs(
        self, db: sqlite3.Connection, mr: sqlite3.Row
    ) -> tuple[str | None, str | None, str | None]:
        """(head, base, start) of a merge request: live while it is open, as merged after."""
        if mr["state"] == "merged":
            return mr["head_sha"], mr["base_sha"], mr["start_sha"]
        pid = mr["project_id"]
        head = self.store.branch(db, pid, mr["source_branch"]) or mr["head_sha"]
        start = self.store.branch(db, pid, mr["target_branch"])
        base = self.store.merge_base(db, pid, start, head) if head and start else None
        return head, base, start

    def _conflicts(self, db: sqlite3.Connection, mr: sqlite3.Row) -> Tree | None:
        """The merged tree, or None when a file changed on both sides differently."""
        head, base, start = self._mr_refs(db, mr)
        pid = mr["project_id"]
        if head is None or start is None:
            return None
        old = self.store.tree(self.store.commit(db, pid, base) if base else None)
        ours = self.store.tree(self.store.commit(db, pid, start))
        theirs = self.store.tree(self.store.commit(db, pid, head))
        merged: Tree = {}
        for path in sorted(old.keys() | ours.keys() | theirs.keys()):
            b, t, s = old.get(path), ours.get(path), theirs.get(path)
            if s == b:
                result = t
            elif t in (b, s):
                result = s
            else:
                return None
            if result is not None:
                merged[path] = result
        return merged

    def _mr_json(
        self, db: sqlite3.Connection, mr: sqlite3.Row, project: sqlite3.Row, base: str
    ) -> dict[str, Any]:
        head, base_sha, start = self._mr_refs(db, mr)
        author = self.store.user_by_id(mr["author_id"])
        author_json = _user_json(author, base) if author else None
        opened = mr["state"] == "opened"
        mergeable = opened and self._conflicts(db, mr) is not None
        notes = db.execute(
            "SELECT count(*) FROM mr_notes WHERE project_id = ? AND mr_iid = ?",
            (project["id"], mr["iid"]),
        ).fetchone()[0]
        web = f"{self._web(project, base)}/-/merge_requests/{mr['iid']}"
        merged = mr["state"] == "merged"
        return {
            "id": mr["id"],
            "iid": mr["iid"],
            "project_id": project["id"],
            "title": mr["title"],
            "description": mr["description"],
            "state": mr["state"],
            "created_at": mr["created_at"],
            "updated_at": mr["updated_at"],
            "merged_at": mr["merged_at"],
            "closed_at": mr["closed_at"],
            "merged_by": author_json if merged else None,
            "merge_user": author_json if merged else None,
            "closed_by": author_json if mr["state"] == "closed" else None,
            "target_branch": mr["target_branch"],
            "source_branch": mr["source_branch"],
            "source_project_id": project["id"],
            "target_project_id": project["id"],
            "author": author_json,
            "assignees": [],
            "assignee": None,
            "reviewers": [],
            "labels": [],
            "draft": False,
            "work_in_progress": False,
            "milestone": None,
            "merge_when_pipeline_succeeds": False,
            "merge_status": "can_be_merged" if mergeable or not opened else "cannot_be_merged",
            "detailed_merge_status": (
                "mergeable" if mergeable else ("conflict" if opened else "not_open")
            ),
            "has_conflicts": opened and not mergeable,
            "sha": head,
            "merge_commit_sha": mr["merge_commit_sha"],
            "squash_commit_sha": None,
            "squash": False,
            "user_notes_count": notes,
            "diff_refs": {"base_sha": base_sha, "head_sha": head, "start_sha": start},
            "web_url": web,
            "references": {
                "short": f"!{mr['iid']}",
                "relative": f"!{mr['iid']}",
                "full": f"{project['path']}!{mr['iid']}",
            },
        }

    def _mr_event(
        self,
        project: sqlite3.Row,
        iid: int,
        action: str,
        base: str,
        *,
        oldrev: str | None = None,
        changes: dict[str, Any] | None = None,
    ) -> None:
        if not self._hooks_for(project["id"], "merge_requests_events"):
            return
        pid = project["id"]
        with self.store.tx() as db:
            mr = self._mr(db, pid, iid)
            data = self._mr_json(db, mr, project, base)
            head = self.store.commit(db, pid, data["sha"]) if data["sha"] else None
            last = self._commit_hook(db, head, project, base) if head else None
        if last is not None:
            for key in ("added", "modified", "removed"):
                last.pop(key)
        bot = self._bot()
        user = {
            "id": bot["id"],
            "name": bot["username"],
            "username": bot["username"],
            "avatar_url": None,
            "email": self._email(bot),
        }
        project_hook = self._project_hook(project, base)
        attrs: dict[str, Any] = {
            "id": data["id"],
            "iid": iid,
            "title": data["title"],
            "description": data["description"],
            "state": data["state"],
            "action": action,
            "source_branch": data["source_branch"],
            "target_branch": data["target_branch"],
            "source_project_id": pid,
            "target_project_id": pid,
            "author_id": mr["author_id"],
            "assignee_id": None,
            "assignee_ids": [],
            "reviewer_ids": [],
            "merge_user_id": mr["author_id"] if data["state"] == "merged" else None,
            "merge_commit_sha": data["merge_commit_sha"],
            "merge_status": data["merge_status"],
            "detailed_merge_status": data["detailed_merge_status"],
            "merge_when_pipeline_succeeds": False,
            "draft": False,
            "work_in_progress": False,
            "head_pipeline_id": None,
            "milestone_id": None,
            "labels": [],
            "blocking_discussions_resolved": True,
            "first_contribution": False,
            "created_at": _hook_time(data["created_at"]),
            "updated_at": _hook_time(data["updated_at"]),
            "url": data["web_url"],
            "source": project_hook,
            "target": project_hook,
            "last_commit": last,
        }
        if oldrev is not None:
            attrs["oldrev"] = oldrev
        payload = {
            "object_kind": "merge_request",
            "event_type": "merge_request",
            "user": user,
            "project": project_hook,
            "object_attributes": attrs,
            "labels": [],
            "changes": changes or {},
            "repository": {
                "name": project_hook["name"],
                "url": project_hook["url"],
                "description": "",
                "homepage": project_hook["homepage"],
            },
        }
        self._emit(project, "merge_requests_events", "Merge Request Hook", payload, base)

    async def list_mrs(self, request: Request) -> Response:
        project = self._project(request)
        q = request.query_params
        sql = "SELECT * FROM merge_requests WHERE project_id = ?"
        args: list[Any] = [project["id"]]
        state = q.get("state", "all")
        if state in ("opened", "closed", "merged", "locked"):
            sql += " AND state = ?"
            args.append(state)
        elif state != "all":
            raise ApiError(400, "state does not have a valid value", "error")
        for name in ("source_branch", "target_branch"):
            if q.get(name):
                sql += f" AND {name} = ?"
                args.append(q[name])
        iids = [int(v) for k, v in q.multi_items() if k in ("iids[]", "iids") and v.isdigit()]
        if iids:
            sql += f" AND iid IN ({','.join('?' * len(iids))})"
            args += iids
        direction = "ASC" if q.get("sort") == "asc" else "DESC"
        sql += f" ORDER BY created_at {direction}, iid {direction}"
        base = self._base(request)
        with self.store.tx() as db:
            rows = db.execute(sql, args).fetchall()

        def render(row: sqlite3.Row) -> Any:
            with self.store.tx() as db:
                return self._mr_json(db, row, project, base)

        return self.api._paginate(request, rows, render)

    async def get_mr(self, request: Request) -> Response:
        project = self._project(request)
        with self.store.tx() as db:
            mr = self._mr(db, project["id"], int(request.path_params["iid"]))
            data = self._mr_json(db, mr, project, self._base(request))
        return JSONResponse(data)

    async def create_mr(self, request: Request) -> Response:
        project = self._project(request)
        pid = project["id"]
        body = await self.api._body(request)
        fields = {k: str(body.get(k) or "").strip() for k in ("source_branch", "target_branch")}
        title = str(body.get("title") or "").strip()
        for name, value in (*fields.items(), ("title", title)):
            if not value:
                raise ApiError(400, f"{name} is missing", "error")
        if body.get("target_project_id") not in (None, "", pid, str(pid)):
            raise ApiError(400, "target_project_id: the sandbox merges within a project", "error")
        source, target = fields["source_branch"], fields["target_branch"]
        if source == target:
            raise _api_error(
                400, {"message": ["You can't use same project/branch for source and target"]}
            )
        bot = self._bot()
        now = _now()
        with self.store.tx() as db:
            for kind, name in (("Source", source), ("Target", target)):
                if self.store.branch(db, pid, name) is None:
                    raise _api_error(400, {"message": [f'{kind} branch "{name}" does not exist']})
            dup = db.execute(
                "SELECT iid FROM merge_requests WHERE project_id = ? AND source_branch = ? "
                "AND target_branch = ? AND state = 'opened'",
                (pid, source, target),
            ).fetchone()
            if dup:
                raise _api_error(
                    409,
                    {
                        "message": [
                            "Another open merge request already exists for this source "
                            f"branch: !{dup['iid']}"
                        ]
                    },
                )
            iid = db.execute(
                "SELECT coalesce(max(iid), 0) + 1 FROM merge_requests WHERE project_id = ?",
                (pid,),
            ).fetchone()[0]
            db.execute(
                "INSERT INTO merge_requests (project_id, iid, title, description, state, "
                "source_branch, target_branch, author_id, head_sha, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, 'opened', ?, ?, ?, ?, ?, ?)",
                (pid, iid, title, str(body.get("description") or ""), source, target,
                 bot["id"], self.store.branch(db, pid, source), now, now),
            )  # fmt: skip
            mr = self._mr(db, pid, iid)
            data = self._mr_json(db, mr, project, self._base(request))
        self._mr_event(project, iid, "open", self._base(request))
        return JSONResponse(data, status_code=201)

    async def update_mr(self, request: Request) -> Response:
        project = self._project(request)
        pid = project["id"]
        iid = int(request.path_params["iid"])
        body = await self.api._body(request)
        base = self._base(request)
        changes: dict[str, Any] = {}
        action: str | None = None
        with self.store.tx() as db:
            mr = self._mr(db, pid, iid)
            sets: dict[str, Any] = {}
            if "title" in body:
                title = str(body["title"] or "").strip()
                if not title:
                    raise ApiError(400, "title is empty", "error")
                sets["title"] = title
            if "description" in body:
                sets["description"] = str(body["description"] or "")
            for key in list(sets):
                if sets[key] == mr[key]:
                    del sets[key]
                else:
                    changes[key] = {"previous": mr[key], "current": sets[key]}
            event = body.get("state_event")
            if event not in (None, "close", "reopen"):
                raise ApiError(400, "state_event does not have a valid value", "error")
            if event == "close" and mr["state"] == "opened":
                sets.update(state="closed", closed_at=_now())
                action = "close"
            elif event == "reopen" and mr["state"] == "closed":
                sets.update(state="opened", closed_at=None)
                action = "reopen"
            if action:
                changes["state_id"] = {
                    "previous": 1 if mr["state"] == "opened" else 2,
                    "current": 1 if action == "reopen" else 2,
                }
            if sets:
                sets["updated_at"] = _now()
                cols = ", ".join(f"{k} = ?" for k in sets)
                db.execute(
                    f"UPDATE merge_requests SET {cols} WHERE id = ?", (*sets.values(), mr["id"])
                )
            mr = self._mr(db, pid, iid)
            data = self._mr_json(db, mr, project, base)
        if action:
            self._mr_event(project, iid, action, base, changes=changes)
        elif changes:
            self._mr_event(project, iid, "update", base, changes=changes)
        return JSONResponse(data)

    async def merge_mr(self, request: Request) -> Response:
        project = self._project(request)
        pid = project["id"]
        iid = int(request.path_params["iid"])
        body = await self.api._body(request)
        base = self._base(request)
        bot = self._bot()
        with self.store.tx() as db:
            mr = self._mr(db, pid, iid)
            if mr["state"] != "opened":
                raise ApiError(405, "405 Method Not Allowed")
            head, merge_base, start = self._mr_refs(db, mr)
            if body.get("sha") and body["sha"] != head:
                raise ApiError(409, "SHA does not match HEAD of source branch: " + str(head))
            tree = self._conflicts(db, mr)
            if tree is None or head is None or start is None:
                raise ApiError(406, "Branch cannot be merged")
            message = str(
                body.get("merge_commit_message")
                or f"Merge branch '{mr['source_branch']}' into '{mr['target_branch']}'\n\n"
                f"{mr['title']}\n\nSee merge request {project['path']}!{iid}"
            )
            commit = self.store.new_commit(
                db, pid, [start, head], tree, message, bot["username"], self._email(bot)
            )
            self.store.set_branch(db, pid, mr["target_branch"], commit["sha"])
            now = _now()
            db.execute(
                "UPDATE merge_requests SET state = 'merged', merge_commit_sha = ?, head_sha = ?, "
                "base_sha = ?, start_sha = ?, merged_at = ?, updated_at = ? WHERE id = ?",
                (commit["sha"], head, merge_base, start, now, now, mr["id"]),
            )
        self._after_push(project, mr["target_branch"], start, commit["sha"], base)
        self._mr_event(project, iid, "merge", base)
        with self.store.tx() as db:
            data = self._mr_json(db, self._mr(db, pid, iid), project, base)
        return JSONResponse(data)

    # --- merge request notes ---

    def _note_json(self, row: sqlite3.Row, base: str) -> dict[str, Any]:
        author = self.store.user_by_id(row["author_id"])
        return {
            "id": row["id"],
            "type": None,
            "body": row["body"],
            "author": _user_json(author, base) if author else None,
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "system": False,
            "noteable_id": None,
            "noteable_type": "MergeRequest",
            "noteable_iid": row["mr_iid"],
            "project_id": row["project_id"],
            "resolvable": False,
            "confidential": False,
            "internal": False,
        }

    def _note_body(self, body: dict[str, Any]) -> str:
        text = str(body.get("body") or "")
        if not text.strip():
            raise ApiError(400, "body is missing", "error")
        if len(text) > 1_000_000:
            raise ApiError(400, "Note is too long (maximum is 1000000 characters)")
        return text

    async def list_mr_notes(self, request: Request) -> Response:
        project = self._project(request)
        iid = int(request.path_params["iid"])
        direction = "ASC" if request.query_params.get("sort") == "asc" else "DESC"
        with self.store.tx() as db:
            self._mr(db, project["id"], iid)
            rows = db.execute(
                "SELECT * FROM mr_notes WHERE project_id = ? AND mr_iid = ? "
                f"ORDER BY id {direction}",
                (project["id"], iid),
            ).fetchall()
        base = self._base(request)
        return self.api._paginate(request, rows, lambda r: self._note_json(r, base))

    def _mr_note(
        self, db: sqlite3.Connection, project: sqlite3.Row, request: Request
    ) -> sqlite3.Row:
        iid = int(request.path_params["iid"])
        self._mr(db, project["id"], iid)
        row: sqlite3.Row | None = db.execute(
            "SELECT * FROM mr_notes WHERE id = ? AND project_id = ? AND mr_iid = ?",
            (int(request.path_params["note_id"]), project["id"], iid),
        ).fetchone()
        if row is None:
            raise ApiError(404, "404 Note Not Found")
        return row

    async def get_mr_note(self, request: Request) -> Response:
        project = self._project(request)
        with self.store.tx() as db:
            row = self._mr_note(db, project, request)
        return JSONResponse(self._note_json(row, self._base(request)))

    async def create_mr_note(self, request: Request) -> Response:
        project = self._project(request)
        iid = int(request.path_params["iid"])
        text = self._note_body(await self.api._body(request))
        bot = self._bot()
        now = _now()
        with self.store.tx() as db:
            self._mr(db, project["id"], iid)
            cur = db.execute(
                "INSERT INTO mr_notes (project_id, mr_iid, body, author_id, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (project["id"], iid, text, bot["id"], now, now),
            )
            row = db.execute("SELECT * FROM mr_notes WHERE id = ?", (cur.lastrowid,)).fetchone()
        return JSONResponse(self._note_json(row, self._base(request)), status_code=201)

    async def update_mr_note(self, request: Request) -> Response:
        project = self._project(request)
        text = self._note_body(await self.api._body(request))
        with self.store.tx() as db:
            row = self._mr_note(db, project, request)
            db.execute(
                "UPDATE mr_notes SET body = ?, updated_at = ? WHERE id = ?",
                (text, _now(), row["id"]),
            )
            row = db.execute("SELECT * FROM mr_notes WHERE id = ?", (row["id"],)).fetchone()
        return JSONResponse(self._note_json(row, self._base(request)))

    # --- commit statuses ---

    def _status_json(self, row: sqlite3.Row, base: str) -> dict[str, Any]:
        author = self.store.user_by_id(row["author_id"])
        return {
            "id": row["id"],
            "sha": row["sha"],
            "ref": row["ref"],
            "status": row["status"],
            "name": row["name"],
            "description": row["description"],
            "target_url": row["target_url"],
            "created_at": row["created_at"],
            "started_at": row["started_at"],
            "finished_at": row["finished_at"],
            "allow_failure": False,
            "coverage": None,
            "pipeline_id": None,
            "author": _user_json(author, base) if author else None,
        }

    async def create_status(self, request: Request) -> Response:
        project = self._project(request)
        pid = project["id"]
        body = await self.api._body(request)
        state = body.get("state")
        if not state:
            raise ApiError(400, "state is missing", "error")
        if state not in STATUS_STATES:
            raise ApiError(400, "state does not have a valid value", "error")
        name = str(body.get("name") or body.get("context") or "default")
        now = _now()
        bot = self._bot()
        with self.store.tx() as db:
            commit = self.store.resolve(db, pid, self._path_param(request, "sha"))
            if commit is None:
                raise ApiError(404, "404 Commit Not Found")
            ref = body.get("ref")
            if not ref:
                branch = db.execute(
                    "SELECT name FROM repo_branches WHERE project_id = ? AND sha = ? "
                    "ORDER BY name != ?, name LIMIT 1",
                    (pid, commit["sha"], DEFAULT_BRANCH),
                ).fetchone()
                ref = branch["name"] if branch else None
            old = db.execute(
                "SELECT * FROM commit_statuses WHERE project_id = ? AND sha = ? AND name = ?",
                (pid, commit["sha"], name),
            ).fetchone()
            started = old["started_at"] if old else None
            if state in ("running", "success", "failed", "canceled") and started is None:
                started = now
            finished = now if state in ("success", "failed", "canceled") else None
            db.execute(
                "DELETE FROM commit_statuses WHERE project_id = ? AND sha = ? AND name = ?",
                (pid, commit["sha"], name),
            )
            cur = db.execute(
                "INSERT INTO commit_statuses (project_id, sha, name, status, description, "
                "target_url, ref, author_id, created_at, started_at, finished_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (pid, commit["sha"], name, state, body.get("description"),
                 body.get("target_url"), ref, bot["id"],
                 old["created_at"] if old else now, started, finished),
            )  # fmt: skip
            row = db.execute(
                "SELECT * FROM commit_statuses WHERE id = ?", (cur.lastrowid,)
            ).fetchone()
        return JSONResponse(self._status_json(row, self._base(request)), status_code=201)

    async def list_statuses(self, request: Request) -> Response:
        project = self._project(request)
        q = request.query_params
        with self.store.tx() as db:
            commit = self.store.resolve(db, project["id"], self._path_param(request, "sha"))
            if commit is None:
                raise ApiError(404, "404 Commit Not Found")
            sql = "SELECT * FROM commit_statuses WHERE project_id = ? AND sha = ?"
            args: list[Any] = [project["id"], commit["sha"]]
            for key in ("ref", "name"):
                if q.get(key):
                    sql += f" AND {key} = ?"
                    args.append(q[key])
            rows = db.execute(sql + " ORDER BY id", args).fetchall()
        base = self._base(request)
        return self.api._paginate(request, rows, lambda r: self._status_json(r, base))

    # --- project hooks ---

    @staticmethod
    def _hook_json(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "id": row["id"],
            "url": row["url"],
            "project_id": row["project_id"],
            "name": None,
            "description": None,
            "push_events": bool(row["push_events"]),
            "push_events_branch_filter": None,
            "merge_requests_events": bool(row["merge_requests_events"]),
            "releases_events": bool(row["releases_events"]),
            "tag_push_events": bool(row["tag_push_events"]),
            "issues_events": False,
            "confidential_issues_events": False,
            "note_events": False,
            "confidential_note_events": False,
            "job_events": False,
            "pipeline_events": False,
            "wiki_page_events": False,
            "deployment_events": False,
            "enable_ssl_verification": True,
            "alert_status": "executable",
            "created_at": row["created_at"],
        }

    async def list_hooks(self, request: Request) -> Response:
        project = self._project(request)
        with self.store.tx() as db:
            rows = db.execute(
                "SELECT * FROM project_hooks WHERE project_id = ? ORDER BY id", (project["id"],)
            ).fetchall()
        return self.api._paginate(request, rows, self._hook_json)

    async def get_hook(self, request: Request) -> Response:
        project = self._project(request)
        with self.store.tx() as db:
            row = db.execute(
                "SELECT * FROM project_hooks WHERE id = ? AND project_id = ?",
                (int(request.path_params["hook_id"]), project["id"]),
            ).fetchone()
        if row is None:
            raise ApiError(404, "404 Not found")
        return JSONResponse(self._hook_json(row))

    async def create_hook(self, request: Request) -> Response:
        project = self._project(request)
        body = await self.api._body(request)
        url = str(body.get("url") or "").strip()
        if not url:
            raise ApiError(400, "url is missing", "error")
        if not hook_url_allowed(url):
            raise ApiError(
                422,
                "Invalid url given: the sandbox delivers hooks only to http(s)://127.0.0.1 or "
                "http(s)://localhost, never elsewhere",
            )
        with self.store.tx() as db:
            cur = db.execute(
                "INSERT INTO project_hooks (project_id, url, token, push_events, "
                "merge_requests_events, releases_events, tag_push_events, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    project["id"],
                    url,
                    str(body["token"]) if body.get("token") else None,
                    _flag(body.get("push_events"), True),
                    _flag(body.get("merge_requests_events"), False),
                    _flag(body.get("releases_events"), False),
                    _flag(body.get("tag_push_events"), False),
                    _now(),
                ),
            )
            row = db.execute(
                "SELECT * FROM project_hooks WHERE id = ?", (cur.lastrowid,)
            ).fetchone()
        return JSONResponse(self._hook_json(row), status_code=201)

    async def delete_hook(self, request: Request) -> Response:
        project = self._project(request)
        with self.store.tx() as db:
            cur = db.execute(
                "DELETE FROM project_hooks WHERE id = ? AND project_id = ?",
                (int(request.path_params["hook_id"]), project["id"]),
            )
        if cur.rowcount == 0:
            raise ApiError(404, "404 Not found")
        return Response(status_code=204)

    # --- control: the delivery log ---

    async def deliveries(self, request: Request) -> Response:
        q = request.query_params
        sql = "SELECT * FROM hook_deliveries WHERE id > ?"
        args: list[Any] = [int(q.get("since", "0"))]
        for key in ("hook_id", "event"):
            if q.get(key):
                sql += f" AND {key} = ?"
                args.append(q[key])
        with self.store.tx() as db:
            rows = db.execute(sql + " ORDER BY id", args).fetchall()
        return JSONResponse([delivery_json(r) for r in rows])

    async def flush(self, request: Request) -> Response:
        try:
            timeout = min(300.0, max(0.0, float(request.query_params.get("timeout", "30"))))
        except ValueError:
            return JSONResponse({"error": "timeout is invalid"}, status_code=400)
        drained = await run_in_threadpool(self.hooks.wait, timeout)
        return JSONResponse(
            {"pending": self.hooks.pending(), "drained": drained},
            status_code=200 if drained else 504,
        )

    async def resend(self, request: Request) -> Response:
        delivery_id = int(request.path_params["delivery_id"])
        with self.store.tx() as db:
            row = db.execute(
                "SELECT * FROM hook_deliveries WHERE id = ?", (delivery_id,)
            ).fetchone()
            hook = (
                db.execute("SELECT * FROM project_hooks WHERE id = ?", (row["hook_id"],)).fetchone()
                if row
                else None
            )
        if row is None:
            return JSONResponse({"message": "404 Delivery Not Found"}, status_code=404)
        if hook is None:
            return JSONResponse({"message": "404 Hook Not Found"}, status_code=404)
        delivery = Delivery(
            hook_id=hook["id"],
            project_id=row["project_id"],
            url=hook["url"],
            token=hook["token"],
            event=row["event"],
            payload=json.loads(row["payload"]),
            event_uuid=row["event_uuid"],
            idempotency_key=row["idempotency_key"],
            instance=json.loads(row["request_headers"]).get("X-Gitlab-Instance", ""),
            generation=self.hooks._generation,
            resend_of=row["id"],
        )
        new_id = await run_in_threadpool(self.hooks.deliver, delivery)
        with self.store.tx() as db:
            new = db.execute("SELECT * FROM hook_deliveries WHERE id = ?", (new_id,)).fetchone()
        return JSONResponse(delivery_json(new), status_code=201)


# --- routes ----------------------------------------------------------------------------------


def repo_routes(repo: RepoApi) -> list[Route]:
    """Routes under /api/v4 (``{project}``, ``{file_path}`` and ``{branch}`` arrive encoded)."""
    p = "/api/v4/projects/{project}"
    r = p + "/repository"
    mr = p + "/merge_requests/{iid:int}"
    table: list[tuple[str, Callable[[Request], Any], list[str]]] = [
        (r + "/commits", repo.list_commits, ["GET"]),
        (r + "/commits", repo.create_commit, ["POST"]),
        (r + "/commits/{sha}", repo.get_commit, ["GET"]),
        (r + "/commits/{sha}/statuses", repo.list_statuses, ["GET"]),
        (p + "/statuses/{sha}", repo.create_status, ["POST"]),
        (r + "/branches", repo.list_branches, ["GET"]),
        (r + "/branches", repo.create_branch, ["POST"]),
        (r + "/branches/{branch}", repo.get_branch, ["GET"]),
        (r + "/files/{file_path}/raw", repo.raw_file, ["GET"]),
        (r + "/files/{file_path}", repo.get_file, ["GET"]),
        (r + "/tree", repo.tree, ["GET"]),
        (r + "/compare", repo.compare, ["GET"]),
        (p + "/merge_requests", repo.list_mrs, ["GET"]),
        (p + "/merge_requests", repo.create_mr, ["POST"]),
        (mr, repo.get_mr, ["GET"]),
        (mr, repo.update_mr, ["PUT"]),
        (mr + "/merge", repo.merge_mr, ["PUT"]),
        (mr + "/notes", repo.list_mr_notes, ["GET"]),
        (mr + "/notes", repo.create_mr_note, ["POST"]),
        (mr + "/notes/{note_id:int}", repo.get_mr_note, ["GET"]),
        (mr + "/notes/{note_id:int}", repo.update_mr_note, ["PUT"]),
        (p + "/hooks", repo.list_hooks, ["GET"]),
        (p + "/hooks", repo.create_hook, ["POST"]),
        (p + "/hooks/{hook_id:int}", repo.get_hook, ["GET"]),
        (p + "/hooks/{hook_id:int}", repo.delete_hook, ["DELETE"]),
    ]
    routes = [Route(path, _guard(repo.api, fn), methods=methods) for path, fn, methods in table]
    c = "/_sandbox/gitlab/hook_deliveries"
    routes += [
        Route(c, repo.deliveries, methods=["GET"]),
        Route(c + "/flush", repo.flush, methods=["POST"]),
        Route(c + "/{delivery_id:int}/resend", repo.resend, methods=["POST"]),
    ]
    return routes


def merge_request_pages(repo: RepoApi) -> list[Route]:
    """``/<project>/-/merge_requests/<iid>``: the merge request, its notes and head statuses."""

    async def page(request: Request) -> Response:
        try:
            project = repo.gitlab.project(quote(request.path_params["project"], safe=""))
            with repo.store.tx() as db:
                mr = repo._mr(db, project["id"], int(request.path_params["iid"]))
                data = repo._mr_json(db, mr, project, GitLabApi._base(request))
                notes = db.execute(
                    "SELECT body, created_at FROM mr_notes WHERE project_id = ? AND mr_iid = ? "
                    "ORDER BY id",
                    (project["id"], mr["iid"]),
                ).fetchall()
                statuses = db.execute(
                    "SELECT name, status, description, target_url FROM commit_statuses "
                    "WHERE project_id = ? AND sha = ? ORDER BY name",
                    (project["id"], data["sha"] or ""),
                ).fetchall()
        except ApiError:
            return Response("not found", status_code=404)
        rows = "".join(
            f"<tr><td>{_esc(s['name'])}</td><td><b>{_esc(s['status'])}</b></td>"
            f"<td>{_esc(s['description'])}</td><td>{_esc(s['target_url'])}</td></tr>"
            for s in statuses
        )
        body = (
            f"<h1>{_esc(data['title'])} <small>!{data['iid']}</small></h1>"
            f"<p><b>{_esc(data['state'])}</b> · {_esc(data['source_branch'])} → "
            f"{_esc(data['target_branch'])} · head {_esc((data['sha'] or '')[:8])}</p>"
            f"<pre>{_esc(data['description'])}</pre>"
            f"<h2>Statuses</h2><table>{rows or '<tr><td>none</td></tr>'}</table>"
            "<h2>Notes</h2>"
            + "".join(
                f"<p><small>{_esc(n['created_at'])}</small></p><pre>{_esc(n['body'])}</pre>"
                for n in notes
            )
        )
        return HTMLResponse(_PAGE.format(title=_esc(data["title"]), body=body))

    return [Route("/{project:path}/-/merge_requests/{iid:int}", page, methods=["GET"])]
