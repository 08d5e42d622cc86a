"""GitLab, through python-gitlab: the only module that talks to GitLab.

Resilience: python-gitlab's own retries are off (``_Gitlab`` forces ``max_retries=0``); every
call goes through one ``RetryPolicy`` (``integrations.retry``): bounded attempts and a
deadline, backoff, GitLab's ``Retry-After`` honoured. Each attempt holds a slot of this
process's bound (``TMINUS_GITLAB_CONCURRENCY``) and, with ``TMINUS_GITLAB_GLOBAL_LIMIT``, one
of the bound every worker shares (``integrations.global_limit``); no slot is held between
attempts. Reads, updates and the creates GitLab refuses to repeat (labels, links: 409) are
simply retried. An issue create or a note whose
answer was lost (a 502 from a proxy, a timeout) may have happened, so before trying again it
is looked up in GitLab (by the issue's key, by the note's text). Errors leave this module as
``TransientError`` or ``PermanentError`` carrying GitLab's own message.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import date, datetime
from typing import Any, TypeVar

import gitlab
import gitlab.exceptions
import requests
import urllib3.exceptions

from tminus.domain.issues import IssueState, IssueWrite, split_description
from tminus.errors import PermanentError, TransientError
from tminus.integrations.global_limit import GlobalLimit, LimitBusy, global_limit
from tminus.integrations.retry import RetryPolicy, parse_retry_after, retry_policy
from tminus.settings import Settings

SYSTEM = "GitLab"
CONNECT_TIMEOUT = 5.0  # seconds to open a connection; the read timeout is a setting
# The Prefect global concurrency limit all workers share (TMINUS_GITLAB_GLOBAL_LIMIT).
GLOBAL_LIMIT_NAME = "tminus-gitlab-api"
PAGE_SIZE = 100  # issues per page of a list (GitLab's largest)
# The open issues blocking each of a page of issues, in one GraphQL request. GitLab lists only
# open blockers (``blocked_by_issues_for``); a small page keeps the query's complexity low.
BLOCKERS_PER_QUERY = 20
# How a GitLab without the field refuses the query (GitLab CE; graphql-core, the stand-in's).
# GitLab Free on EE has the field and answers empty lists, as it has no blocking links.
NO_BLOCKED_BY = (
    "Field 'blockedByIssues' doesn't exist on type 'Issue'",
    "Cannot query field 'blockedByIssues' on type 'Issue'.",
)
BLOCKERS_QUERY = """
query tminusBlockers($path: ID!, $iids: [String!], $first: Int, $after: String) {
  project(fullPath: $path) {
    issues(iids: $iids, first: $first, after: $after) {
      nodes {
        iid
        blockedByIssues(first: 100) {
          nodes { iid projectId }
          pageInfo { hasNextPage }
        }
      }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""
T = TypeVar("T")
C = TypeVar("C", bound="GitLabCalls")

_HINTS = {
    401: "check TMINUS_GITLAB_TOKEN (a token with the `api` scope)",
    403: "the token's user needs at least the Reporter role on the project (Planner for labels)",
    404: "check the project path or id, and that the token's user can see it",
}


def _transient_status(code: int | None) -> bool:
    return code is not None and (code == 429 or code >= 500 or code == 408)


_answers = threading.local()


class _Session(requests.Session):
    """Remembers, per thread, the ``Retry-After`` of the last answer: python-gitlab's errors
    carry the status and body but not the headers."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        _answers.retry_after = None
        response = super().request(*args, **kwargs)
        _answers.retry_after = response.headers.get("Retry-After")
        return response


class _Gitlab(gitlab.Gitlab):
    """python-gitlab with its own retries off: ``RetryPolicy`` is the one retry owner."""

    def http_request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.update(max_retries=0, obey_rate_limit=False, retry_transient_errors=False)
        return super().http_request(*args, **kwargs)


@contextmanager
def translate(resource: str) -> Iterator[None]:
    """Turn python-gitlab and requests exceptions into tminus errors."""
    try:
        yield
    except gitlab.exceptions.GitlabError as exc:
        code = exc.response_code
        message = str(exc.error_message or exc).strip() or "no message"
        if code in _HINTS:
            message = f"{message} ({_HINTS[code]})"
        if _transient_status(code):
            raise TransientError(
                SYSTEM,
                message,
                status=code,
                resource=resource,
                retry_after=(
                    parse_retry_after(getattr(_answers, "retry_after", None))
                    if code == 429
                    else None
                ),
                sent=code != 429,  # a 429 was refused before anything was done
            ) from exc
        raise PermanentError(SYSTEM, message, status=code, resource=resource) from exc
    except requests.RequestException as exc:
        raise TransientError(
            SYSTEM,
            f"cannot reach GitLab ({type(exc).__name__})",
            resource=resource,
            sent=not _surely_not_sent(exc),
        ) from None


def _surely_not_sent(exc: requests.RequestException) -> bool:
    """Only a connection that never opened surely sent nothing; a reset, a TLS error or a read
    timeout may come after GitLab acted on the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(
        reason, urllib3.exceptions.NewConnectionError
    )


def _state(attrs: dict[str, Any], key: str | None) -> IssueState:
    due = attrs.get("due_date")
    closed = attrs.get("closed_at")
    return IssueState(
        iid=int(attrs["iid"]),
        web_url=str(attrs.get("web_url", "")),
        title=str(attrs.get("title", "")),
        description=str(attrs.get("description") or ""),
        labels=tuple(attrs.get("labels") or ()),
        due_date=date.fromisoformat(due) if due else None,
        assignee_ids=tuple(int(a["id"]) for a in attrs.get("assignees") or ()),
        state=str(attrs.get("state", "opened")),
        key=key,
        assignees=tuple(str(a["username"]) for a in attrs.get("assignees") or ()),
        closed_at=datetime.fromisoformat(closed) if closed else None,
    )


def label_color(name: str) -> str:
    """A stable color per label (GitLab requires one); tiers get fixed colors."""
    fixed = {
        "launch-tier::L1": "#dc143c",
        "launch-tier::L2": "#ed9121",
        "launch-tier::L3": "#428bca",
        "launch-status::dropped": "#808080",
    }
    if name in fixed:
        return fixed[name]
    return "#" + hashlib.sha256(name.encode()).hexdigest()[:6]


class GitLabCalls:
    """The one way calls reach GitLab: python-gitlab under the retry policy, within this
    process's concurrency bound and, if given, the one every worker shares. The adapters
    (``GitLabTracker`` here, ``GitLabRepository`` in ``integrations.gitlab_repo``) build on it."""

    def __init__(
        self,
        client: gitlab.Gitlab,
        concurrency: int = 8,
        retry: RetryPolicy | None = None,
        shared: GlobalLimit | None = None,
    ) -> None:
        self._gl = client
        self._retry = retry or RetryPolicy()
        self._concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self._shared = shared

    @property
    def url(self) -> str:
        return str(self._gl.url)

    def close(self) -> None:
        """Close the kept-alive connections (GitLab's, and Prefect's for a shared limit)."""
        self._gl.session.close()
        if self._shared is not None:
            self._shared.close()

    def _project(self, project: str) -> Any:
        return self._gl.projects.get(project, lazy=True)

    def _call(
        self,
        resource: str,
        fn: Callable[[], T],
        *,
        idempotent: bool = True,
        recover: Callable[[], T | None] | None = None,
    ) -> T:
        """Run one GitLab call under the retry policy, each attempt within the concurrency
        bound of this process and, if given, the one shared by every worker (a wait between
        attempts holds no slot of either)."""

        def attempt() -> T:
            with self._slots, self._shared_slot(resource), translate(resource):
                return fn()

        return self._retry.call(attempt, idempotent=idempotent, recover=recover)

    def _each(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``fn(item)`` for every item, up to the concurrency bound at once; the answers in
        item order. Every call runs to its end; then the first error (in item order) is
        raised."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        workers = min(self._concurrency, len(items))
        with ThreadPoolExecutor(workers, thread_name_prefix="gitlab") as pool:
            futures = [pool.submit(fn, item) for item in items]
        errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
        return [f.result() for f in futures]

    @contextmanager
    def _shared_slot(self, resource: str) -> Iterator[None]:
        with ExitStack() as stack:
            if self._shared is not None:
                try:
                    stack.enter_context(self._shared.hold(timeout=self._retry.deadline))
                except LimitBusy as exc:  # nothing was sent: the retry policy may try again
                    raise TransientError(SYSTEM, str(exc), resource=resource, sent=False) from None
            yield


class GitLabTracker(GitLabCalls):
    """``IssueTracker`` on a real GitLab (or the stand-in), via python-gitlab."""

    def __init__(
        self,
        client: gitlab.Gitlab,
        concurrency: int = 8,
        retry: RetryPolicy | None = None,
        shared: GlobalLimit | None = None,
    ) -> None:
        super().__init__(client, concurrency, retry, shared)
        self._users: dict[str, int | None] = {}
        self._project_ids: dict[str, int] = {}
        self._project_paths: dict[str, str] = {}  # as named -> GitLab's current full path
        self._lock = threading.Lock()

    def check_project(self, project: str) -> str:
        proj = self._call(f"project {project}", lambda: self._gl.projects.get(project))
        with self._lock:
            self._project_ids[project] = int(proj.id)
            self._project_paths[project] = str(proj.path_with_namespace)
        return str(proj.web_url)

    def _project_id(self, project: str) -> int:
        with self._lock:
            known = self._project_ids.get(project)
        if known is None:
            self.check_project(project)
            with self._lock:
                known = self._project_ids[project]
        return known

    def user_id(self, username: str) -> int | None:
        with self._lock:
            if username in self._users:
                return self._users[username]
        users = self._call(
            f"user {username}", lambda: self._gl.users.list(username=username, get_all=True)
        )
        uid = next((int(u.id) for u in users if u.username.lower() == username.lower()), None)
        with self._lock:
            self._users[username] = uid
        return uid

    def find_issues(self, project: str, launch_label: str, marker_prefix: str) -> list[IssueState]:
        # Two queries, because either alone can miss: people remove labels, and GitLab's
        # search index may lag right after a create. The caller matches keys exactly.
        # The two are independent: they run at once.
        proj = self._project(project)
        found: dict[int, dict[str, Any]] = {}
        resource = f"issues of {project}"

        def query(q: dict[str, Any]) -> list[Any]:
            return self._call(
                resource,
                lambda: list(proj.issues.list(state="all", iterator=True, per_page=100, **q)),
            )

        queries = [{"labels": [launch_label]}, {"search": marker_prefix, "in": "description"}]
        for issues in self._each(query, queries):
            for issue in issues:
                found[int(issue.iid)] = issue.attributes
        states = []
        for attrs in sorted(found.values(), key=lambda a: int(a["iid"])):
            _, key, _ = split_description(str(attrs.get("description") or ""))
            if key is not None:
                states.append(_state(attrs, key))
        return states

    def list_issues(
        self, project: str, labels: list[str], state: str = "opened"
    ) -> list[IssueState]:
        """Issues with all of ``labels``, oldest first: every page of ``iter_issues``."""
        return list(self.iter_issues(project, labels, state))

    def iter_issues(
        self, project: str, labels: list[str], state: str = "opened"
    ) -> Iterator[IssueState]:
        """Issues with all of ``labels`` (e.g. every open tracking issue), oldest first, one
        page of GitLab's list (``PAGE_SIZE`` issues) fetched at a time as the caller consumes
        them, so only that page is held. Each page is one call under the retry policy (a
        failed page is fetched again, not the pages before it); the next page is the one
        GitLab's ``X-Next-Page`` names.

        Pages are offsets into a list that may change while it is read: in creation order an
        issue created meanwhile comes last, but one that leaves the list (closed, unlabelled)
        moves the rest up, so the issue after it may be missed until the next read. One that
        joins the list ahead of the page being read (reopened) moves the rest down, so issues
        already yielded come again: those of the page before are skipped (a shift of more
        than a page while one page is consumed could still repeat one)."""
        path = self._project(project).issues.path
        query = {
            "labels": ",".join(labels),
            "state": state,
            "order_by": "created_at",
            "sort": "asc",
            "per_page": PAGE_SIZE,
        }
        resource = f"issues of {project}"

        def fetch(page: int) -> tuple[list[dict[str, Any]], int | None]:
            # get_next=False: this object never fetches a page by itself, outside the policy.
            listed = gitlab.GitlabList(self._gl, path, {**query, "page": page}, get_next=False)
            return list(listed), listed.next_page

        page: int | None = 1
        seen: set[int] = set()  # the iids of the page before
        while page is not None:
            items, next_page = self._call(resource, functools.partial(fetch, page))
            if next_page is not None and next_page <= page:  # a server that loops
                raise PermanentError(
                    SYSTEM, f"page {page} names page {next_page} next", resource=resource
                )
            page = next_page
            iids = {int(attrs["iid"]) for attrs in items}
            for attrs in items:
                if int(attrs["iid"]) not in seen:
                    description = str(attrs.get("description") or "")
                    yield _state(attrs, split_description(description)[1])
            seen = iids

    def project_labels(self, project: str) -> set[str]:
        proj = self._project(project)
        resource = f"labels of {project}"
        return {lbl.name for lbl in self._call(resource, lambda: proj.labels.list(get_all=True))}

    def ensure_labels(self, project: str, labels: list[str]) -> list[str]:
        """Create ``labels`` (the caller observed that the project lacks them), up to the
        concurrency bound at once; a label that exists answers 409 and is left as it is.
        Returns the ones this call created."""
        proj = self._project(project)

        def create(name: str) -> bool:
            try:
                self._call(
                    f"label {name}",
                    lambda: proj.labels.create({"name": name, "color": label_color(name)}),
                )
            except PermanentError as exc:
                if exc.status != 409:
                    raise
                return False  # it exists (created meanwhile, or by an earlier attempt)
            return True

        return [name for name, new in zip(labels, self._each(create, labels), strict=True) if new]

    @staticmethod
    def _payload(write: IssueWrite) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if write.title is not None:
            data["title"] = write.title
        if write.description is not None:
            data["description"] = write.description
        if write.due_date is not None:
            data["due_date"] = write.due_date.isoformat()
        if write.assignee_ids is not None:
            data["assignee_ids"] = list(write.assignee_ids)
        if write.add_labels:
            data["add_labels"] = ",".join(write.add_labels)
        if write.remove_labels:
            data["remove_labels"] = ",".join(write.remove_labels)
        if write.state_event is not None:
            data["state_event"] = write.state_event
        return data

    def create_issue(self, project: str, write: IssueWrite, labels: tuple[str, ...]) -> IssueState:
        """Create an issue at most once: after a lost answer, look it up by key first."""
        data = self._payload(write)
        data.pop("add_labels", None)
        data["labels"] = list(labels)
        key = split_description(write.description or "")[1]
        proj = self._project(project)
        return self._call(
            f"new issue in {project}",
            lambda: _state(proj.issues.create(data).attributes, key),
            idempotent=False,
            recover=(lambda: self._find_key(project, key, labels)) if key else None,
        )

    def _find_key(self, project: str, key: str, labels: tuple[str, ...]) -> IssueState | None:
        """The issue carrying ``key``, by its labels (consistent at once, unlike search)."""
        proj = self._project(project)
        query: dict[str, Any] = {"labels": list(labels)} if labels else {"search": key}
        issues = self._call(
            f"issues of {project}",
            lambda: list(proj.issues.list(state="all", iterator=True, per_page=100, **query)),
        )
        for issue in issues:
            if split_description(str(issue.attributes.get("description") or ""))[1] == key:
                return _state(issue.attributes, key)
        return None

    def update_issue(self, project: str, iid: int, write: IssueWrite) -> IssueState:
        proj = self._project(project)
        attrs = self._call(
            f"issue {project}#{iid}", lambda: proj.issues.update(iid, self._payload(write))
        )
        return _state(attrs, split_description(str(attrs.get("description") or ""))[1])

    def linked_iids(self, project: str, iid: int) -> set[int]:
        issue = self._project(project).issues.get(iid, lazy=True)
        pid = self._project_id(project)
        links = self._call(f"links of {project}#{iid}", lambda: issue.links.list(get_all=True))
        return {int(link.iid) for link in links if int(link.project_id) == pid}

    def link_issues(self, project: str, iid: int, target_iid: int) -> None:
        issue = self._project(project).issues.get(iid, lazy=True)
        pid = self._project_id(project)
        try:
            self._call(
                f"link {project}#{iid} -> #{target_iid}",
                # Safe to retry: a link that exists already answers 409.
                lambda: issue.links.create(
                    {"target_project_id": pid, "target_issue_iid": target_iid}
                ),
            )
        except PermanentError as exc:
            if exc.status != 409:  # already linked
                raise

    def blocker_iids(self, project: str, iid: int) -> set[int]:
        issue = self._project(project).issues.get(iid, lazy=True)
        pid = self._project_id(project)
        links = self._call(f"links of {project}#{iid}", lambda: issue.links.list(get_all=True))
        return {
            int(link.iid)
            for link in links
            if int(link.project_id) == pid and getattr(link, "link_type", "") == "is_blocked_by"
        }

    def open_blockers(self, project: str, iids: list[int]) -> dict[int, set[int]]:
        # GitLab's REST API reads links one issue at a time; its GraphQL API reads them for a
        # page of issues in one request. The request goes through python-gitlab's session,
        # under the same retry policy and concurrency bounds as every other call.
        found: dict[int, set[int]] = {iid: set() for iid in iids}
        if not iids:
            return found
        pid = self._project_id(project)
        with self._lock:  # GraphQL names a project by its path only: not by id, no redirect
            path = self._project_paths[project]
        url = f"{str(self._gl.url).rstrip('/')}/api/graphql"
        resource = f"blocking links of {project}"
        for start in range(0, len(iids), BLOCKERS_PER_QUERY):
            chunk = iids[start : start + BLOCKERS_PER_QUERY]
            variables = {"path": path, "iids": [str(i) for i in chunk], "first": len(chunk)}
            body = {"query": BLOCKERS_QUERY, "variables": variables}
            answer = self._call(
                resource, functools.partial(self._gl.http_post, url, post_data=body)
            )
            data = _graphql_data(answer, resource)
            if data is None:  # no blockedByIssues (GitLab CE): no blocking links at all
                return found
            try:
                if data["project"] is None:
                    raise PermanentError(
                        SYSTEM,
                        "project not found: check the project path",
                        status=404,
                        resource=project,
                    )
                answered: set[int] = set()
                for node in data["project"]["issues"]["nodes"]:
                    iid = int(node["iid"])
                    blockers = node["blockedByIssues"]
                    if blockers is None or blockers["pageInfo"]["hasNextPage"]:
                        continue  # more than a page of blockers: read below, by REST
                    found[iid] = {
                        int(b["iid"]) for b in blockers["nodes"] if int(b["projectId"]) == pid
                    }
                    answered.add(iid)
            except (KeyError, TypeError, ValueError) as exc:
                raise TransientError(
                    SYSTEM, f"unexpected GraphQL answer ({exc!r})", resource=resource
                ) from None
            # One issue GitLab did not answer for (a smaller page than asked, a long list of
            # blockers) is read the REST way, all its links.
            for iid in chunk:
                if iid not in answered:
                    found[iid] = self.blocker_iids(project, iid)
        return found

    def block_issue(self, project: str, blocker_iid: int, blocked_iid: int) -> bool:
        issue = self._project(project).issues.get(blocker_iid, lazy=True)
        pid = self._project_id(project)
        try:
            self._call(
                f"link {project}#{blocker_iid} blocks #{blocked_iid}",
                lambda: issue.links.create(
                    {
                        "target_project_id": pid,
                        "target_issue_iid": blocked_iid,
                        "link_type": "blocks",
                    }
                ),
            )
        except PermanentError as exc:
            if exc.status == 403 and "license" in str(exc).lower():
                # GitLab Free: "Blocked issues not available for current license" (relates_to
                # links, which the same token makes, still work). Any other 403 is a real
                # permission problem and fails with GitLab's message.
                return False
            if exc.status == 409:  # linked already: as blocking (a retry), or as related
                return blocker_iid in self.blocker_iids(project, blocked_iid)
            raise
        return True

    def add_note(self, project: str, iid: int, body: str) -> int:
        """Add a note; return its id. After a lost answer, a note with this exact body is
        looked up before the note is sent again."""
        issue = self._project(project).issues.get(iid, lazy=True)

        def find() -> int | None:
            found = self.find_note(project, iid, body)
            return found[0] if found and found[1] == body else None

        return self._call(
            f"note on {project}#{iid}",
            lambda: int(issue.notes.create({"body": body}).id),
            idempotent=False,
            recover=find,
        )

    def find_note(
        self, project: str, iid: int, text: str, after: int | None = None
    ) -> tuple[int, str] | None:
        """The oldest note whose body contains ``text`` (and, with ``after``, whose id is
        greater), as (note id, body)."""
        issue = self._project(project).issues.get(iid, lazy=True)
        notes = self._call(
            f"notes of {project}#{iid}",
            lambda: list(issue.notes.list(iterator=True, per_page=100, sort="asc")),
        )
        for note in notes:
            if text in (note.body or "") and (after is None or int(note.id) > after):
                return int(note.id), str(note.body)
        return None

    def update_note(self, project: str, iid: int, note_id: int, body: str) -> None:
        proj = self._project(project)
        self._call(
            f"note {note_id} on {project}#{iid}",
            lambda: proj.issues.get(iid, lazy=True).notes.update(note_id, {"body": body}),
        )


def gitlab_client(url: str, token: str | None, timeout: float = 15.0) -> gitlab.Gitlab:
    """A python-gitlab client with its own retries off (``RetryPolicy`` retries)."""
    timeouts: Any = (min(CONNECT_TIMEOUT, timeout), timeout)  # requests takes (connect, read)
    return _Gitlab(url, private_token=token, timeout=timeouts, per_page=100, session=_Session())


def build_client(settings: Settings) -> gitlab.Gitlab:
    """The one place a GitLab client is built; the token is unwrapped only here."""
    token = settings.gitlab_token.get_secret_value() if settings.gitlab_token else None
    if token is None and settings.embedded:
        token = "sandbox"  # the stand-in accepts any token unless told otherwise
    return gitlab_client(settings.gitlab_base_url, token, settings.gitlab_timeout)


def build_calls(settings: Settings, kind: type[C]) -> C:
    """A GitLab adapter of ``kind`` with the settings' client, bounds and retry policy."""
    shared = None
    if settings.gitlab_global_limit:
        # The lease outlives the longest attempt, so no renewal is needed.
        lease = CONNECT_TIMEOUT + settings.gitlab_timeout + 30
        shared = global_limit(GLOBAL_LIMIT_NAME, settings.gitlab_global_limit, lease)
    return kind(
        build_client(settings),
        concurrency=settings.gitlab_concurrency,
        retry=retry_policy(settings),
        shared=shared,
    )


def build_tracker(settings: Settings) -> GitLabTracker:
    return build_calls(settings, GitLabTracker)


def _graphql_data(answer: Any, resource: str) -> dict[str, Any] | None:
    """The ``data`` of a GraphQL answer (GitLab answers 200 with ``errors`` for a bad query);
    None when the query was refused only because this GitLab has no ``blockedByIssues``."""
    if not isinstance(answer, dict):
        raise TransientError(SYSTEM, "GraphQL answered without a JSON object", resource=resource)
    errors = answer.get("errors") or []
    if errors:
        messages = [str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors]
        if answer.get("data") is None and all(m in NO_BLOCKED_BY for m in messages):
            return None
        raise PermanentError(SYSTEM, "; ".join(messages), resource=resource)
    data = answer.get("data")
    if not isinstance(data, dict):
        raise TransientError(SYSTEM, "GraphQL answered without data", resource=resource)
    return data
