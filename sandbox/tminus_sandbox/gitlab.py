"""A local stand-in for the subset of GitLab's REST API v4 that tminus uses (and, in
``gitlab_graphql``, of its GraphQL API).

Projects (by id or URL-encoded path), users, labels, issues (search/in, labels, state, iids
filters; delete; offset pagination with Link and X-* headers), notes and issue links. State lives in
SQLite, so it survives restarts. Shapes and error bodies follow GitLab's, close enough for
python-gitlab: ``{"message": ...}`` for 401/403/404/409, ``{"error": ...}`` for 400.

Conveniences that real GitLab does not have (both on by default, off with ``auto_create=False``):
a project or user looked up by name is created on first use, so any launch file works locally.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tminus_sandbox.store import SqliteStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, username TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS labels (
  id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, name TEXT NOT NULL, color TEXT NOT NULL,
  description TEXT, UNIQUE (project_id, name));
CREATE TABLE IF NOT EXISTS issues (
  id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, iid INTEGER NOT NULL, title TEXT NOT NULL,
  description TEXT, state TEXT NOT NULL, labels TEXT NOT NULL, due_date TEXT,
  assignee_ids TEXT NOT NULL, author_id INTEGER, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
  closed_at TEXT, UNIQUE (project_id, iid));
CREATE TABLE IF NOT EXISTS notes (
  id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, issue_iid INTEGER NOT NULL,
  body TEXT NOT NULL, author_id INTEGER, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS links (
  id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, source_iid INTEGER NOT NULL,
  target_project_id INTEGER NOT NULL, target_iid INTEGER NOT NULL, link_type TEXT NOT NULL,
  UNIQUE (project_id, source_iid, target_project_id, target_iid));
"""

BOT_USERNAME = "tminus-bot"


class ApiError(Exception):
    def __init__(self, status: int, message: str, key: str = "message") -> None:
        self.status = status
        self.body = {key: message}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class GitLabStore(SqliteStore):
    """The stand-in's data, in one SQLite file (or ``:memory:``)."""

    def __init__(self, path: str | Path, *, auto_create: bool = True) -> None:
        super().__init__(path, SCHEMA)
        self.auto_create = auto_create
        # Blocking links (blocks / is_blocked_by) are a paid feature; False answers as GitLab
        # Free does. Tests switch it; a reset switches it back on.
        self.blocked_issues = True
        self.user(BOT_USERNAME, create=True)

    def reset(self) -> None:
        self.blocked_issues = True
        with self.tx() as db:
            for table in ("projects", "users", "labels", "issues", "notes", "links"):
                db.execute(f"DELETE FROM {table}")
        self.user(BOT_USERNAME, create=True)

    # --- lookups ---

    def project(self, ref: str) -> sqlite3.Row:
        ref = unquote(ref)
        with self.tx() as db:
            if ref.isdigit():
                row = db.execute("SELECT * FROM projects WHERE id = ?", (int(ref),)).fetchone()
            else:
                row = db.execute("SELECT * FROM projects WHERE path = ?", (ref,)).fetchone()
                if row is None and self.auto_create and "/" in ref:
                    db.execute("INSERT INTO projects (path) VALUES (?)", (ref,))
                    row = db.execute("SELECT * FROM projects WHERE path = ?", (ref,)).fetchone()
        if row is None:
            raise ApiError(404, "404 Project Not Found")
        return row

    def user(self, username: str, *, create: bool | None = None) -> sqlite3.Row | None:
        create = self.auto_create if create is None else create
        with self.tx() as db:
            row = db.execute(
                "SELECT * FROM users WHERE lower(username) = lower(?)", (username,)
            ).fetchone()
            if row is None and create:
                db.execute("INSERT INTO users (username) VALUES (?)", (username,))
                row = db.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
        return row

    def user_by_id(self, uid: int) -> sqlite3.Row | None:
        with self.tx() as db:
            return db.execute("SELECT * FROM users WHERE id = ?", (uid,)).fetchone()

    def issue(self, project_id: int, iid: int) -> sqlite3.Row:
        with self.tx() as db:
            row = db.execute(
                "SELECT * FROM issues WHERE project_id = ? AND iid = ?", (project_id, iid)
            ).fetchone()
        if row is None:
            raise ApiError(404, "404 Not found")
        return row


# --- JSON shapes ---------------------------------------------------------------------------


def _user_json(row: sqlite3.Row, base: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "username": row["username"],
        "name": row["username"],
        "state": "active",
        "avatar_url": None,
        "web_url": f"{base}/{row['username']}",
    }


class GitLabApi:
    """Route handlers; ``base`` is the URL clients used, so links point back at them."""

    def __init__(self, store: GitLabStore, token: str | None = None) -> None:
        self.store = store
        self.token = token

    # helpers

    def _issue_json(self, row: sqlite3.Row, project: sqlite3.Row, base: str) -> dict[str, Any]:
        assignees = []
        for uid in json.loads(row["assignee_ids"]):
            user = self.store.user_by_id(uid)
            if user is not None:
                assignees.append(_user_json(user, base))
        author = self.store.user_by_id(row["author_id"]) if row["author_id"] else None
        with self.store.tx() as db:
            notes = db.execute(
                "SELECT count(*) FROM notes WHERE project_id = ? AND issue_iid = ?",
                (project["id"], row["iid"]),
            ).fetchone()[0]
        web = f"{base}/{project['path']}/-/issues/{row['iid']}"
        return {
            "id": row["id"],
            "iid": row["iid"],
            "project_id": project["id"],
            "title": row["title"],
            "description": row["description"],
            "state": row["state"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "closed_at": row["closed_at"],
            "labels": json.loads(row["labels"]),
            "milestone": None,
            "assignees": assignees,
            "assignee": assignees[0] if assignees else None,
            "author": _user_json(author, base) if author else None,
            "due_date": row["due_date"],
            "confidential": False,
            "issue_type": "issue",
            "type": "ISSUE",
            "user_notes_count": notes,
            "web_url": web,
            "references": {
                "short": f"#{row['iid']}",
                "relative": f"#{row['iid']}",
                "full": f"{project['path']}#{row['iid']}",
            },
            "_links": {"self": f"{base}/api/v4/projects/{project['id']}/issues/{row['iid']}"},
        }

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        ctype = request.headers.get("content-type", "")
        if "json" in ctype:
            try:
                data = json.loads(raw)
            except ValueError:
                raise ApiError(400, "body is not valid JSON", "error") from None
            if not isinstance(data, dict):
                raise ApiError(400, "body must be a JSON object", "error")
            return data
        return dict(parse_qsl(raw.decode()))

    @staticmethod
    def _labels(value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, list):
            items = value
        else:
            items = str(value).split(",")
        out: list[str] = []
        for item in items:
            name = str(item).strip()
            if name and name not in out:
                out.append(name)
        return out

    @staticmethod
    def _scoped_merge(current: list[str], add: list[str]) -> list[str]:
        """Adding ``scope::x`` removes other ``scope::*`` labels, as GitLab does."""
        out = list(current)
        for label in add:
            if "::" in label:
                scope = label.rsplit("::", 1)[0]
                out = [c for c in out if not (("::" in c) and c.rsplit("::", 1)[0] == scope)]
            if label not in out:
                out.append(label)
        return out

    def _ensure_labels(self, db: sqlite3.Connection, project_id: int, names: list[str]) -> None:
        # GitLab creates unknown labels given to an issue, with a default color.
        for name in names:
            db.execute(
                "INSERT OR IGNORE INTO labels (project_id, name, color) VALUES (?, ?, '#6699cc')",
                (project_id, name),
            )

    def _paginate(
        self,
        request: Request,
        items: list[Any],
        render: Callable[[Any], Any] | None = None,
    ) -> Response:
        """One page of ``items``; with ``render``, only the page's items are rendered (a page
        of a 10,000-issue project costs one page, not 10,000 issues)."""
        try:
            page = max(1, int(request.query_params.get("page", "1")))
            per_page = min(100, max(1, int(request.query_params.get("per_page", "20"))))
        except ValueError:
            raise ApiError(400, "page is invalid", "error") from None
        total = len(items)
        pages = max(1, -(-total // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        if render is not None:
            chunk = [render(item) for item in chunk]
        headers = {
            "X-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-Total": str(total),
            "X-Total-Pages": str(pages),
            "X-Next-Page": str(page + 1) if page < pages else "",
            "X-Prev-Page": str(page - 1) if page > 1 else "",
        }
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        base = f"{request.url.scheme}://{request.url.netloc}{raw_path.split('?', 1)[0]}"
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]

        def link(p: int, rel: str) -> str:
            return f'<{base}?{urlencode([*params, ("page", str(p))])}>; rel="{rel}"'

        rels = []
        if page < pages:
            rels.append(link(page + 1, "next"))
        if page > 1:
            rels.append(link(page - 1, "prev"))
        rels += [link(1, "first"), link(pages, "last")]
        headers["Link"] = ", ".join(rels)
        return JSONResponse(chunk, headers=headers)

    @staticmethod
    def _base(request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}"

    # endpoints

    async def current_user(self, request: Request) -> Response:
        bot = self.store.user(BOT_USERNAME, create=True)
        assert bot is not None
        return JSONResponse(_user_json(bot, self._base(request)))

    async def users(self, request: Request) -> Response:
        username = request.query_params.get("username")
        rows: list[sqlite3.Row] = []
        if username:
            row = self.store.user(username)
            rows = [row] if row else []
        else:
            with self.store.tx() as db:
                rows = db.execute("SELECT * FROM users ORDER BY id").fetchall()
        return self._paginate(request, [_user_json(r, self._base(request)) for r in rows])

    async def get_project(self, request: Request) -> Response:
        project = self.store.project(request.path_params["project"])
        base = self._base(request)
        return JSONResponse(
            {
                "id": project["id"],
                "name": project["path"].rsplit("/", 1)[-1],
                "path": project["path"].rsplit("/", 1)[-1],
                "path_with_namespace": project["path"],
                "web_url": f"{base}/{project['path']}",
                "default_branch": "main",
            }
        )

    async def list_labels(self, request: Request) -> Response:
        project = self.store.project(request.path_params["project"])
        with self.store.tx() as db:
            rows = db.execute(
                "SELECT * FROM labels WHERE project_id = ? ORDER BY name", (project["id"],)
            ).fetchall()
        return self._paginate(
            request,
            [
                {
                    "id": r["id"],
                    "name": r["name"],
                    "color": r["color"],
                    "description": r["description"],
                    "is_project_label": True,
                }
                for r in rows
            ],
        )

    async def create_label(self, request: Request) -> Response:
        project = self.store.project(request.path_params["project"])
        body = await self._body(request)
        name = str(body.get("name") or "").strip()
        color = str(body.get("color") or "").strip()
        if not name:
            raise ApiError(400, "name is missing", "error")
        if not color:
            raise ApiError(400, "color is missing", "error")
        with self.store.tx() as db:
            exists = db.execute(
                "SELECT 1 FROM labels WHERE project_id = ? AND name = ?", (project["id"], name)
            ).fetchone()
            if exists:
                raise ApiError(409, "Label already exists")
            cur = db.execute(
                "INSERT INTO labels (project_id, name, color, description) VALUES (?, ?, ?, ?)",
                (project["id"], name, color, body.get("description")),
            )
        return JSONResponse(
            {
                "id": cur.lastrowid,
                "name": name,
                "color": color,
                "description": body.get("description"),
            },
            status_code=201,
        )

    async def list_issues(self, request: Request) -> Response:
        project = self.store.project(request.path_params["project"])
        q = request.query_params
        sql = "SELECT * FROM issues WHERE project_id = ?"
        args: list[Any] = [project["id"]]
        state = q.get("state", "all")
        if state in ("opened", "closed"):
            sql += " AND state = ?"
            args.append(state)
        iids = [int(v) for k, v in q.multi_items() if k in ("iids[]", "iids") and v.isdigit()]
        if iids:
            sql += f" AND iid IN ({','.join('?' * len(iids))})"
            args += iids
        # Filters run in SQL, so a list costs what it finds, not the project's size. Search
        # folds ASCII case only (SQLite's lower), as GitLab's search does for these markers.
        wanted = self._labels(q.get("labels"))
        for label in wanted:
            sql += " AND EXISTS (SELECT 1 FROM json_each(issues.labels) WHERE value = ?)"
            args.append(label)
        search = q.get("search")
        if search:
            fields = [f.strip() for f in q.get("in", "title,description").split(",")]
            columns = [f"coalesce({f}, '')" for f in ("title", "description") if f in fields]
            text = " || ' ' || ".join(columns) or "''"
            for term in (t.lower() for t in search.split() if t):
                sql += f" AND instr(lower({text}), ?) > 0"
                args.append(term)
        order = "created_at" if q.get("order_by", "created_at") == "created_at" else "updated_at"
        direction = "ASC" if q.get("sort") == "asc" else "DESC"
        sql += f" ORDER BY {order} {direction}, iid {direction}"
        with self.store.tx() as db:
            rows = db.execute(sql, args).fetchall()
        base = self._base(request)
        return self._paginate(request, rows, lambda r: self._issue_json(r, project, base))

    async def get_issue(self, request: Request) -> Response:
        project = self.store.project(request.path_params["project"])
        row = self.store.issue(project["id"], int(request.path_params["iid"]))
        return JSONResponse(self._issue_json(row, project, self._base(request)))

    def _assignee_ids(self, value: Any) -> list[int]:
        if value in (None, "", []):
            return []
        ids = value if isinstance(value, list) else str(value).split(",")
        out = []
        for item in ids:
            uid = int(item)
            if self.store.user_by_id(uid) is None:
                raise ApiError(404, "404 User Not Found")
            out.append(uid)
        return out

    @staticmethod
    def _due(value: Any) -> str | None:
        if value in (None, ""):
            return None
        try:
            return datetime.strptime(str(value), "%Y-%m-%d").date().isoformat()
        except ValueError:
            raise ApiError(400, "due_date is invalid", "error") from None

    async def create_issue(self, request: Request) -> Response:
        project = self.store.project(request.path_params["project"])
        body = await self._body(request)
        title = str(body.get("title") or "").strip()
        if not title:
            raise ApiError(400, "title is missing", "error")
        if len(title) > 255:
            raise ApiError(400, "title is too long (maximum is 255 characters)", "error")
        labels = self._labels(body.get("labels"))
        assignees = self._assignee_ids(body.get("assignee_ids", body.get("assignee_id")))
        due = self._due(body.get("due_date"))
        now = _now()
        bot = self.store.user(BOT_USERNAME, create=True)
        with self.store.tx() as db:
            iid = db.execute(
                "SELECT coalesce(max(iid), 0) + 1 FROM issues WHERE project_id = ?",
                (project["id"],),
            ).fetchone()[0]
            self._ensure_labels(db, project["id"], labels)
            db.execute(
                "INSERT INTO issues (project_id, iid, title, description, state, labels, due_date, "
                "assignee_ids, author_id, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, 'opened', ?, ?, ?, ?, ?, ?)",
                (
                    project["id"],
                    iid,
                    title,
                    body.get("description") or "",
                    json.dumps(labels),
                    due,
                    json.dumps(assignees),
                    bot["id"] if bot else None,
                    now,
                    now,
                ),
            )
        row = self.store.issue(project["id"], iid)
        return JSONResponse(self._issue_json(row, project, self._base(request)), status_code=201)

    async def update_issue(self, request: Request) -> Response:
        project = self.store.project(request.path_params["project"])
        iid = int(request.path_params["iid"])
        row = self.store.issue(project["id"], iid)
        body = await self._body(request)
        changes: dict[str, Any] = {}
        if "title" in body:
            title = str(body["title"] or "").strip()
            if not title:
                raise ApiError(400, "title is empty", "error")
            changes["title"] = title
        if "description" in body:
            changes["description"] = body["description"] or ""
        if "due_date" in body:
            changes["due_date"] = self._due(body["due_date"])
        if "assignee_ids" in body or "assignee_id" in body:
            changes["assignee_ids"] = json.dumps(
                self._assignee_ids(body.get("assignee_ids", body.get("assignee_id")))
            )
        labels = json.loads(row["labels"])
        new_labels = labels
        if "labels" in body:
            new_labels = self._labels(body["labels"])
        if "add_labels" in body:
            new_labels = self._scoped_merge(new_labels, self._labels(body["add_labels"]))
        if "remove_labels" in body:
            drop = set(self._labels(body["remove_labels"]))
            new_labels = [lbl for lbl in new_labels if lbl not in drop]
        if new_labels != labels:
            changes["labels"] = json.dumps(new_labels)
        event = body.get("state_event")
        if event == "close" and row["state"] != "closed":
            changes.update(state="closed", closed_at=_now())
        elif event == "reopen" and row["state"] != "opened":
            changes.update(state="opened", closed_at=None)
        elif event not in (None, "close", "reopen"):
            raise ApiError(400, "state_event does not have a valid value", "error")
        if changes:
            changes["updated_at"] = _now()
            with self.store.tx() as db:
                if "labels" in changes:
                    self._ensure_labels(db, project["id"], new_labels)
                cols = ", ".join(f"{k} = ?" for k in changes)
                db.execute(
                    f"UPDATE issues SET {cols} WHERE project_id = ? AND iid = ?",
                    (*changes.values(), project["id"], iid),
                )
        row = self.store.issue(project["id"], iid)
        return JSONResponse(self._issue_json(row, project, self._base(request)))

    async def delete_issue(self, request: Request) -> Response:
        project = self.store.project(request.path_params["project"])
        iid = int(request.path_params["iid"])
        self.store.issue(project["id"], iid)
        pid = project["id"]
        with self.store.tx() as db:
            db.execute("DELETE FROM issues WHERE project_id = ? AND iid = ?", (pid, iid))
            db.execute("DELETE FROM notes WHERE project_id = ? AND issue_iid = ?", (pid, iid))
            db.execute(
                "DELETE FROM links WHERE (project_id = ? AND source_iid = ?) "
                "OR (target_project_id = ? AND target_iid = ?)",
                (pid, iid, pid, iid),
            )
        return Response(status_code=204)

    def _note_json(self, row: sqlite3.Row, base: str) -> dict[str, Any]:
        author = self.store.user_by_id(row["author_id"]) if row["author_id"] else None
        return {
            "id": row["id"],
            "body": row["body"],
            "author": _user_json(author, base) if author else None,
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "system": False,
            "noteable_id": None,
            "noteable_type": "Issue",
            "noteable_iid": row["issue_iid"],
            "project_id": row["project_id"],
        }

    async def list_notes(self, request: Request) -> Response:
        project = self.store.project(request.path_params["project"])
        iid = int(request.path_params["iid"])
        self.store.issue(project["id"], iid)
        direction = "ASC" if request.query_params.get("sort") == "asc" else "DESC"
        with self.store.tx() as db:
            rows = db.execute(
                "SELECT * FROM notes WHERE project_id = ? AND issue_iid = ? "
                f"ORDER BY id {direction}",
                (project["id"], iid),
            ).fetchall()
        return self._paginate(request, [self._note_json(r, self._base(request)) for r in rows])

    async def create_note(self, request: Request) -> Response:
        project = self.store.project(request.path_params["project"])
        iid = int(request.path_params["iid"])
        self.store.issue(project["id"], iid)
        body = await self._body(request)
        text = str(body.get("body") or "")
        if not text.strip():
            raise ApiError(400, "body is missing", "error")
        now = _now()
        bot = self.store.user(BOT_USERNAME, create=True)
        with self.store.tx() as db:
            cur = db.execute(
                "INSERT INTO notes (project_id, issue_iid, body, author_id, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (project["id"], iid, text, bot["id"] if bot else None, now, now),
            )
            row = db.execute("SELECT * FROM notes WHERE id = ?", (cur.lastrowid,)).fetchone()
        return JSONResponse(self._note_json(row, self._base(request)), status_code=201)

    async def update_note(self, request: Request) -> Response:
        project = self.store.project(request.path_params["project"])
        iid = int(request.path_params["iid"])
        note_id = int(request.path_params["note_id"])
        body = await self._body(request)
        text = str(body.get("body") or "")
        if not text.strip():
            raise ApiError(400, "body is missing", "error")
        with self.store.tx() as db:
            cur = db.execute(
                "UPDATE notes SET body = ?, updated_at = ? "
                "WHERE id = ? AND project_id = ? AND issue_iid = ?",
                (text, _now(), note_id, project["id"], iid),
            )
            if cur.rowcount == 0:
                raise ApiError(404, "404 Note Not Found")
            row = db.execute("SELECT * FROM notes WHERE id = ?", (note_id,)).fetchone()
        return JSONResponse(self._note_json(row, self._base(request)))

    async def list_links(self, request: Request) -> Response:
        project = self.store.project(request.path_params["project"])
        iid = int(request.path_params["iid"])
        self.store.issue(project["id"], iid)
        with self.store.tx() as db:
            rows = db.execute(
                "SELECT * FROM links WHERE (project_id = ? AND source_iid = ?) "
                "OR (target_project_id = ? AND target_iid = ?) ORDER BY id",
                (project["id"], iid, project["id"], iid),
            ).fetchall()
        base = self._base(request)
        out = []
        for r in rows:
            outward = r["project_id"] == project["id"] and r["source_iid"] == iid
            other_pid, other_iid = (
                (r["target_project_id"], r["target_iid"])
                if outward
                else (r["project_id"], r["source_iid"])
            )
            other_project = self.store.project(str(other_pid))
            other = self.store.issue(other_pid, other_iid)
            item = self._issue_json(other, other_project, base)
            # Stored as "blocks" from the blocking issue; seen from the other end it is the
            # inverse, as GitLab answers it.
            link_type = r["link_type"]
            if not outward:
                link_type = {"blocks": "is_blocked_by", "is_blocked_by": "blocks"}.get(
                    link_type, link_type
                )
            item.update(issue_link_id=r["id"], link_type=link_type)
            out.append(item)
        return JSONResponse(out)

    async def create_link(self, request: Request) -> Response:
        project = self.store.project(request.path_params["project"])
        iid = int(request.path_params["iid"])
        source = self.store.issue(project["id"], iid)
        body = await self._body(request)
        try:
            target_pid = int(self.store.project(str(body["target_project_id"]))["id"])
            target_iid = int(body["target_issue_iid"])
        except KeyError as exc:
            raise ApiError(400, f"{exc.args[0]} is missing", "error") from None
        target = self.store.issue(target_pid, target_iid)
        link_type = str(body.get("link_type") or "relates_to")
        if link_type not in ("relates_to", "blocks", "is_blocked_by"):
            raise ApiError(400, "link_type does not have a valid value", "error")
        if target_pid == project["id"] and target_iid == iid:
            raise ApiError(400, "Cannot link an issue to itself", "message")
        if link_type != "relates_to" and not self.store.blocked_issues:
            raise ApiError(403, "Blocked issues not available for current license")
        # GitLab keeps "A is_blocked_by B" as "B blocks A".
        stored = (project["id"], iid, target_pid, target_iid, link_type)
        if link_type == "is_blocked_by":
            stored = (target_pid, target_iid, project["id"], iid, "blocks")
        with self.store.tx() as db:
            dup = db.execute(
                "SELECT 1 FROM links WHERE (project_id = ? AND source_iid = ? AND "
                "target_project_id = ? AND target_iid = ?) OR (project_id = ? AND source_iid = ? "
                "AND target_project_id = ? AND target_iid = ?)",
                (
                    project["id"],
                    iid,
                    target_pid,
                    target_iid,
                    target_pid,
                    target_iid,
                    project["id"],
                    iid,
                ),
            ).fetchone()
            if dup:
                raise ApiError(409, "Issue(s) already assigned")
            db.execute(
                "INSERT INTO links (project_id, source_iid, target_project_id, target_iid, "
                "link_type) VALUES (?, ?, ?, ?, ?)",
                stored,
            )
        base = self._base(request)
        target_project = self.store.project(str(target_pid))
        return JSONResponse(
            {
                "source_issue": self._issue_json(source, project, base),
                "target_issue": self._issue_json(target, target_project, base),
                "link_type": link_type,
            },
            status_code=201,
        )

    async def graphql(self, request: Request) -> Response:
        """GitLab's GraphQL endpoint, the part tminus reads (``gitlab_graphql``)."""
        from tminus_sandbox.gitlab_graphql import execute  # it builds on this module

        return JSONResponse(execute(self.store, await self._body(request)))


def _guard(api: GitLabApi, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        if api.token is not None:
            given = request.headers.get("private-token") or request.headers.get(
                "authorization", ""
            ).removeprefix("Bearer ")
            if given != api.token:
                return JSONResponse({"message": "401 Unauthorized"}, status_code=401)
        try:
            response: Response = await handler(request)
            return response
        except ApiError as exc:
            return JSONResponse(exc.body, status_code=exc.status)

    return endpoint


def gitlab_routes(api: GitLabApi) -> list[Route]:
    """Routes under /api/v4, and /api/graphql. ``{project}`` arrives still URL-encoded (see
    RawPathMiddleware)."""
    p = "/api/v4/projects/{project}"
    table: list[tuple[str, Callable[[Request], Any], list[str]]] = [
        ("/api/graphql", api.graphql, ["POST"]),
        ("/api/v4/user", api.current_user, ["GET"]),
        ("/api/v4/users", api.users, ["GET"]),
        (p, api.get_project, ["GET"]),
        (p + "/labels", api.list_labels, ["GET"]),
        (p + "/labels", api.create_label, ["POST"]),
        (p + "/issues", api.list_issues, ["GET"]),
        (p + "/issues", api.create_issue, ["POST"]),
        (p + "/issues/{iid:int}", api.get_issue, ["GET"]),
        (p + "/issues/{iid:int}", api.update_issue, ["PUT"]),
        (p + "/issues/{iid:int}", api.delete_issue, ["DELETE"]),
        (p + "/issues/{iid:int}/notes", api.list_notes, ["GET"]),
        (p + "/issues/{iid:int}/notes", api.create_note, ["POST"]),
        (p + "/issues/{iid:int}/notes/{note_id:int}", api.update_note, ["PUT"]),
        (p + "/issues/{iid:int}/links", api.list_links, ["GET"]),
        (p + "/issues/{iid:int}/links", api.create_link, ["POST"]),
    ]
    return [Route(path, _guard(api, fn), methods=methods) for path, fn, methods in table]


class RawPathMiddleware:
    """Route GitLab paths on the raw (still encoded) path.

    python-gitlab sends ``/projects/group%2Fproject/issues``; Starlette decodes the path before
    routing, which turns the project into two segments and 404s. Keeping ``%2F`` encoded makes
    ``{project}`` one segment; handlers decode it.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/v4/"):
            raw = scope.get("raw_path")
            if raw:
                scope = dict(scope, path=raw.decode("latin-1").split("?", 1)[0])
        await self.app(scope, receive, send)


def project_url_segment(path: str) -> str:
    return quote(path, safe="")


# --- read-only HTML pages, so the web_url of an issue opens something in a browser -----------

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
.label{{display:inline-block;background:#eee;border-radius:1rem;padding:0 .6rem;margin:0 .2rem}}
pre{{white-space:pre-wrap;background:#f7f7f7;padding:1rem;border-radius:.4rem}}
td{{padding:.2rem .6rem}}</style></head><body>
<p><small>tminus sandbox: a stand-in for GitLab</small></p>{body}</body></html>"""


def _esc(value: Any) -> str:
    import html

    return html.escape(str(value if value is not None else ""))


def issue_pages(api: GitLabApi) -> list[Route]:
    async def issue_page(request: Request) -> Response:
        try:
            project = api.store.project(quote(request.path_params["project"], safe=""))
            row = api.store.issue(project["id"], int(request.path_params["iid"]))
        except ApiError:
            return Response("not found", status_code=404)
        data = api._issue_json(row, project, GitLabApi._base(request))
        with api.store.tx() as db:
            notes = db.execute(
                "SELECT body, created_at FROM notes WHERE project_id = ? AND issue_iid = ? "
                "ORDER BY id",
                (project["id"], row["iid"]),
            ).fetchall()
        labels = "".join(f'<span class="label">{_esc(lbl)}</span>' for lbl in data["labels"])
        who = ", ".join("@" + a["username"] for a in data["assignees"]) or "nobody"
        body = (
            f"<h1>{_esc(data['title'])} <small>#{data['iid']}</small></h1>"
            f"<p><b>{_esc(data['state'])}</b> · due {_esc(data['due_date'] or '—')} · "
            f"assigned to {_esc(who)}</p><p>{labels}</p>"
            f"<pre>{_esc(data['description'])}</pre>"
            + "".join(
                f"<p><small>{_esc(n['created_at'])}</small><br>{_esc(n['body'])}</p>" for n in notes
            )
        )
        return HTMLResponse(_PAGE.format(title=_esc(data["title"]), body=body))

    async def issues_page(request: Request) -> Response:
        try:
            project = api.store.project(quote(request.path_params["project"], safe=""))
        except ApiError:
            return Response("not found", status_code=404)
        with api.store.tx() as db:
            rows = db.execute(
                "SELECT iid, title, state, due_date FROM issues WHERE project_id = ? ORDER BY iid",
                (project["id"],),
            ).fetchall()
        items = "".join(
            f'<tr><td><a href="issues/{r["iid"]}">#{r["iid"]}</a></td><td>{_esc(r["title"])}'
            f"</td><td>{_esc(r['state'])}</td><td>{_esc(r['due_date'] or '')}</td></tr>"
            for r in rows
        )
        return HTMLResponse(
            _PAGE.format(
                title=_esc(project["path"]),
                body=f"<h1>{_esc(project['path'])}: issues</h1><table>{items}</table>",
            )
        )

    return [
        Route("/{project:path}/-/issues/{iid:int}", issue_page, methods=["GET"]),
        Route("/{project:path}/-/issues/", issues_page, methods=["GET"]),
        Route("/{project:path}/-/issues", issues_page, methods=["GET"]),
    ]
