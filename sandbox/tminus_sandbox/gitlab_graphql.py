"""The stand-in's GitLab GraphQL endpoint (``POST /api/graphql``): the part of GitLab's schema
tminus reads, the issues blocking each of a project's issues, executed by graphql-core.

As GitLab answers: every answer is 200 with ``data`` and/or ``errors``; an unknown project is
``"project": null`` (it finds projects by full path only); ``blockedByIssues`` lists the *open*
issues blocking an issue. With blocking links switched off the field is absent, as on GitLab CE,
where asking for it is a query error (GitLab EE without the licence answers empty lists).
Connections page with ``first`` / ``after`` (opaque cursors, at most 100 per page).
"""

from __future__ import annotations

import base64
import sqlite3
from typing import Any

from graphql import GraphQLSchema, build_schema, graphql_sync

from tminus_sandbox.gitlab import ApiError, GitLabStore

_TYPES = """
type Query {
  project(fullPath: ID!): Project
}

type Project {
  id: ID!
  fullPath: ID!
  issues(iids: [String!], first: Int, after: String): IssueConnection
}

type IssueConnection {
  nodes: [Issue]
  pageInfo: PageInfo!
}

type PageInfo {
  hasNextPage: Boolean!
  endCursor: String
}
"""
_ISSUE_FREE = """
type Issue {
  iid: String!
  projectId: Int!
  state: String!
}
"""
_ISSUE_PAID = """
type Issue {
  iid: String!
  projectId: Int!
  state: String!
  blockedByIssues(first: Int, after: String): IssueConnection
}
"""
MAX_PAGE = 100
SCHEMAS: dict[bool, GraphQLSchema] = {
    False: build_schema(_TYPES + _ISSUE_FREE),
    True: build_schema(_TYPES + _ISSUE_PAID),
}


def _page(rows: list[sqlite3.Row], first: int | None, after: str | None) -> dict[str, Any]:
    start = int(base64.b64decode(after).decode()) if after else 0
    size = max(0, min(first if first is not None else MAX_PAGE, MAX_PAGE))
    shown = rows[start : start + size]
    end = start + len(shown)
    return {
        "rows": shown,
        "pageInfo": {
            "hasNextPage": end < len(rows),
            "endCursor": base64.b64encode(str(end).encode()).decode() if shown else None,
        },
    }


class Resolvers:
    """Root value and field resolvers over the stand-in's store (graphql-core calls a callable
    field value with ``info`` and the field's arguments)."""

    def __init__(self, store: GitLabStore) -> None:
        self.store = store

    def root(self) -> dict[str, Any]:
        return {"project": self.project}

    def project(self, _info: Any, fullPath: str) -> dict[str, Any] | None:
        with self.store.tx() as db:
            row = db.execute("SELECT * FROM projects WHERE path = ?", (fullPath,)).fetchone()
        if row is None:
            return None
        pid = int(row["id"])
        return {
            "id": f"gid://gitlab/Project/{pid}",
            "fullPath": row["path"],
            "issues": lambda _info, iids=None, first=None, after=None: self.issues(
                pid, iids, first, after
            ),
        }

    def issues(
        self, pid: int, iids: list[str] | None, first: int | None, after: str | None
    ) -> dict[str, Any]:
        with self.store.tx() as db:
            rows = db.execute(
                "SELECT * FROM issues WHERE project_id = ? ORDER BY iid", (pid,)
            ).fetchall()
        if iids is not None:
            wanted = {int(i) for i in iids if i.isdigit()}
            rows = [r for r in rows if int(r["iid"]) in wanted]
        page = _page(rows, first, after)
        return {"nodes": [self.issue(r) for r in page["rows"]], "pageInfo": page["pageInfo"]}

    def issue(self, row: sqlite3.Row) -> dict[str, Any]:
        pid, iid = int(row["project_id"]), int(row["iid"])
        return {
            "iid": str(iid),
            "projectId": pid,
            "state": row["state"],
            "blockedByIssues": lambda _info, first=None, after=None: self.blocked_by(
                pid, iid, first, after
            ),
        }

    def blocked_by(
        self, pid: int, iid: int, first: int | None, after: str | None
    ) -> dict[str, Any]:
        # Links are stored as "blocks" from the blocking issue (see GitLabApi.create_link).
        with self.store.tx() as db:
            rows = db.execute(
                "SELECT i.* FROM links l JOIN issues i "
                "ON i.project_id = l.project_id AND i.iid = l.source_iid "
                "WHERE l.link_type = 'blocks' AND l.target_project_id = ? AND l.target_iid = ? "
                "AND i.state = 'opened' ORDER BY l.id",
                (pid, iid),
            ).fetchall()
        page = _page(rows, first, after)
        return {"nodes": [self.issue(r) for r in page["rows"]], "pageInfo": page["pageInfo"]}


def execute(store: GitLabStore, body: Any) -> dict[str, Any]:
    """One GraphQL request's answer, as GitLab shapes it."""
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        raise ApiError(400, "query is missing", "error")
    variables = body.get("variables")
    resolvers = Resolvers(store)
    result = graphql_sync(
        SCHEMAS[store.blocked_issues],
        body["query"],
        root_value=resolvers.root(),
        variable_values=variables if isinstance(variables, dict) else None,
        operation_name=body.get("operationName"),
    )
    answer: dict[str, Any] = {}
    if result.errors:
        answer["errors"] = [{"message": e.message} for e in result.errors]
    if result.data is not None:
        answer["data"] = result.data
    return answer
