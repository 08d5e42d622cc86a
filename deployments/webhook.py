"""The GitLab webhook receiver (``tminus webhook``): GitLab hook deliveries become Prefect events.

The open-source Prefect server has no webhooks, so this small ASGI app stands in front of it:

``POST /hooks/gitlab``  check headers, size and ``X-Gitlab-Token``, ignore (2xx) events other
                        than ``Release Hook``, ``Merge Request Hook`` and ``Push Hook``, read the
                        body within a deadline, parse and validate it, ignore (2xx) what needs
                        no run, de-duplicate on the delivery key, store the Prefect event in the
                        SQLite outbox, answer 202 at once.
``GET /healthz``        200 while the receiver runs: pending rows, their age, Prefect reachability.

What becomes which event (the payload is always the flow's parameter, as JSON):

=====================  ================================  ==========================================
X-Gitlab-Event         event                             payload
=====================  ================================  ==========================================
``Release Hook``       ``gitlab.release.<action>``       on-release's ``Release``
``Merge Request Hook`` ``gitlab.merge_request.<action>`` preview's ``MergeRequestChange``
``Push Hook``          ``gitlab.push``                   apply-launches' ``Push``
=====================  ================================  ==========================================

Merge request and push hooks matter only for the launches repository (``launches_projects``,
from ``TMINUS_LAUNCHES_REPO``): hooks of other projects, merge request actions other than
``open``, ``reopen`` and ``update`` with new commits (``oldrev``), pushes to branches other than
the default one and branch deletions are answered 200 ``{"status": "ignored", "reason": ...}``
and nothing is stored (``ignore_merge_request`` and ``ignore_push`` say why).

Every body goes through one bounded path (``parse_json_body``): at most ``max_body_bytes``
(release hooks) or ``max_repo_body_bytes`` (merge request and push hooks) (413), read within
``body_timeout`` seconds (408), strict UTF-8, JSON nested at most ``MAX_JSON_DEPTH`` deep with
no duplicate keys, no NaN and no giant integers (400), then the hook's model, whose values are
bounded to what GitLab sends (422 naming the field). Each refusal is a 4xx with a JSON body
``{"error": ..., "problems": [...]}`` that says what is wrong and how to fix it. The event's
payload is the flow's parameter itself, validated here (a release's description cut to an
excerpt that keeps the ``Launch-Tier:`` line): whatever is accepted, Prefect accepts as a run's
parameters.

``server_config`` bounds slow clients below the app too: a request's head must arrive within
``header_timeout`` seconds, idle keep-alive connections close after ``keep_alive_timeout``,
and uvicorn's own 400s for malformed HTTP are JSON as well.

A background sender posts pending outbox rows to ``{prefect_api_url}/events`` (up to
``SEND_BATCH`` per request) and marks them sent; while Prefect is down they wait on disk and
the sender backs off. While deliveries keep arriving (a burst) it holds the events, for
``BURST_HOLD_SECONDS`` at most: the answers come first. Delivery to Prefect is at least
once: the event id is a uuid5 of the delivery key, so Prefect's trigger service drops a repeat
it has seen in the last ~30 minutes, and the flow the event starts must be idempotent.

Why answer before Prefect has the event: GitLab waits 10 s, counts 4xx/5xx and timeouts as
failures, disables hooks that keep failing and never redelivers by itself. An answer that
waited for Prefect would turn a Prefect restart into a disabled hook and a lost release.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import operator
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import httpx
import uvicorn
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
)
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from tminus.deployments.outbox import Outbox, OutboxRow
from tminus.domain.release import (
    DELIVERY_MAX_CHARS,
    URL_MAX_CHARS,
    GitLabId,
    ProjectPath,
    Release,
    ReleaseName,
    TagName,
    Text,
    WebUrl,
    check_release_time,
    check_text,
    description_excerpt,
)
from tminus.domain.repository import (
    BRANCH_PREFIX,
    NO_COMMIT,
    BranchName,
    BranchRef,
    MergeRequestChange,
    Push,
    RepoProject,
    Sha,
    same_project,
)
from tminus.domain.validation import describe_validation_error

logger = logging.getLogger("tminus.webhook")
_Model = TypeVar("_Model", bound=BaseModel)

HOOK_PATH = "/hooks/gitlab"
RELEASE_HOOK = "Release Hook"
MERGE_REQUEST_HOOK = "Merge Request Hook"
PUSH_HOOK = "Push Hook"
HANDLED_EVENTS = (RELEASE_HOOK, MERGE_REQUEST_HOOK, PUSH_HOOK)
# Merge request actions that can change what a preview shows (``update`` only with new commits);
# GitLab also sends close, merge, approved, unapproved, approval and unapproval.
PREVIEW_ACTIONS = ("open", "reopen", "update")
DEFAULT_PORT = 4282
# Fixed namespace of the event ids: the same delivery key always gives the same event id, in
# every process and after every restart (Prefect's trigger service de-duplicates on it).
EVENT_ID_NAMESPACE = uuid.UUID("6c1f8f0e-2a53-5b1e-9f4e-7d0a8c3b2e41")
# Prefect answers these when the event itself is malformed; retrying cannot help, and keeping
# the row pending would block every later delivery behind it.
REJECTED_STATUSES = frozenset({400, 413, 422})
# Events per request to Prefect: a burst of deliveries costs a few requests (and one outbox
# commit each), not one per delivery. Each event is at most a few kilobytes.
SEND_BATCH = 50
# While deliveries are being answered, the sender holds their events for up to this long: the
# answers come first (GitLab waits for them; Prefect takes the events as well a moment later),
# and on one machine Prefect's work on each batch competes with the answers for the CPUs.
BURST_HOLD_SECONDS = 2.0
QUIET_SECONDS = 0.05  # a burst is over when no delivery arrived for this long
LULL_POLL_SECONDS = 0.02
# GitLab allows release notes of up to 1,000,000 characters; the rest of a Release Hook is a
# few kilobytes. Twice that leaves room for JSON escapes.
MAX_BODY_BYTES = 2 * 1024 * 1024
# Merge request and push hooks are larger. A merge request description may be 1,048,576
# characters and an edit carries it up to three times (object_attributes.description and
# changes.description.previous/current); a push lists up to 20 commits, each with its full
# message and the paths it added, modified and removed. 8 MiB holds all of that with room for
# JSON escapes, while one request's memory stays bounded; GitLab itself sends no webhook
# payload over 25 MB. A refused push or edit elsewhere costs one failed delivery, and GitLab
# disables a hook only after several failures in a row.
MAX_REPO_BODY_BYTES = 8 * 1024 * 1024
# GitLab's hooks nest at most 5 levels (a merge request's changes.labels.previous[].*); far
# deeper is an attack on the parser.
MAX_JSON_DEPTH = 32
# GitLab's numbers are ids and counts; longer integers cost quadratic time to convert.
MAX_INT_DIGITS = 20
# Headers the receiver reads: each must come once (or repeat the same value), or which one
# counts would be a guess.
SINGLE_HEADERS = (
    "content-type",
    "x-gitlab-token",
    "x-gitlab-event",
    "idempotency-key",
    "x-gitlab-event-uuid",
    "x-gitlab-instance",
)


@dataclass(frozen=True)
class WebhookConfig:
    """What the receiver needs; built from settings by the CLI.

    ``token`` is the secret configured on the GitLab hook; ``None`` accepts every request
    (logged as a warning at start-up). ``prefect_api_url`` ends in ``/api``.
    ``prefect_api_auth_string`` is the ``user:password`` of a Prefect server started with
    ``PREFECT_SERVER_API_AUTH_STRING``. ``max_backoff`` caps the wait between attempts while
    Prefect is unreachable. A client has ``header_timeout`` seconds to send a request's head
    and ``body_timeout`` more for its body (GitLab itself gives up after 10 s);
    ``keep_alive_timeout`` closes idle connections. ``max_body_bytes`` bounds release hooks,
    ``max_repo_body_bytes`` merge request and push hooks. ``launches_projects`` holds the
    launches repository's project path (``TMINUS_LAUNCHES_REPO``; compared ignoring case, as
    GitLab does): merge request and push hooks of other projects are ignored, and all of them
    while it is empty.
    """

    token: SecretStr | None
    prefect_api_url: str
    db_path: Path
    max_body_bytes: int = MAX_BODY_BYTES
    send_interval: float = 0.5
    send_timeout: float = 5.0
    max_backoff: float = 30.0
    prefect_api_auth_string: SecretStr | None = None
    header_timeout: float = 5.0
    body_timeout: float = 5.0
    keep_alive_timeout: int = 5
    max_repo_body_bytes: int = MAX_REPO_BODY_BYTES
    launches_projects: frozenset[str] = frozenset()

    def body_limit(self, kind: str | None) -> int:
        """The largest body accepted for a delivery of ``X-Gitlab-Event: kind``."""
        if kind in (MERGE_REQUEST_HOOK, PUSH_HOOK):
            return self.max_repo_body_bytes
        return self.max_body_bytes


# --- refusals ----------------------------------------------------------------------------------


def _json_bytes(content: Any) -> bytes:
    # ASCII escapes: an error quoting a client's text can never fail to encode.
    return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return _json_bytes(content)


def _error(
    status: int, message: str, problems: list[str] | None = None, **headers: str
) -> Response:
    content: dict[str, Any] = {"error": message}
    if problems is not None:
        content["problems"] = problems
    return _JSON(content, status_code=status, headers=headers or None)


class Refused(Exception):
    """A delivery the receiver answers with a 4xx; ``message`` says what is wrong and the fix."""

    def __init__(self, status: int, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems

    def response(self) -> Response:
        # 408 and 413 leave part of the body unread: the connection cannot carry another request.
        close = {"connection": "close"} if self.status in (408, 413) else {}
        return _error(self.status, self.message, self.problems, **close)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- the body ----------------------------------------------------------------------------------

# A JSON string (possessive: linear even on hostile input), or an unterminated one to the end.
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(body: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest, found without parsing it (parsers
    recurse, so depth must be known before one runs); linear time, C loops only."""
    brackets = _JSON_STRING.sub(b"", body).translate(_BRACKET_STEPS, _NOT_BRACKETS)
    # Each opener adds 2 and each closer 0; minus one per bracket, that is +1 / -1.
    depths = map(operator.sub, itertools.accumulate(brackets), itertools.count(1))
    return max(depths, default=0)


class _BadJSON(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                break
            seen.add(key)
        raise _BadJSON(f"key {_short(key)} appears twice in one object; send each key once")
    return obj


def _constant(name: str) -> Any:
    raise _BadJSON(f"{name} is not JSON; send finite numbers")


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _BadJSON(f"an integer has more than {MAX_INT_DIGITS} digits; GitLab sends none")
    return int(text)


def parse_json_body(body: bytes) -> Any:
    """Strict UTF-8 JSON, bounded in depth, without duplicate keys, NaN or giant integers."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused(400, f"body is not UTF-8 (byte {exc.start}); send UTF-8 JSON") from None
    if json_depth(body) > MAX_JSON_DEPTH:
        raise Refused(
            400,
            f"body nests arrays or objects deeper than {MAX_JSON_DEPTH} levels; "
            "GitLab's hooks need 5 at most",
        )
    try:
        return json.loads(
            text, object_pairs_hook=_object, parse_constant=_constant, parse_int=_integer
        )
    except _BadJSON as exc:
        raise Refused(400, f"body is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise Refused(400, f"body is not valid JSON: {exc}; send one JSON object") from None


# --- the payload -------------------------------------------------------------------------------


def _parse_gitlab_time(value: Any) -> Any:
    """GitLab writes ``2020-11-02 12:55:12 UTC``, not ISO 8601; ISO is still accepted."""
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("is not a time; send it as GitLab does, e.g. '2020-11-02 12:55:12 UTC'")
    text = value.strip()
    for fmt in ("%Y-%m-%d %H:%M:%S UTC", "%Y-%m-%d %H:%M:%S %z"):
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return value  # pydantic tries ISO 8601 and names the field if that fails too


# In UTC, within the years a launch can be planned in (an offset at the ends of the calendar
# would overflow on conversion).
GitLabTime = Annotated[
    AwareDatetime, BeforeValidator(_parse_gitlab_time), AfterValidator(check_release_time)
]


class HookProject(BaseModel):
    """The ``project`` of a Release Hook; GitLab sends many more fields, all ignored."""

    model_config = ConfigDict(extra="ignore")

    id: GitLabId
    path_with_namespace: ProjectPath
    web_url: WebUrl


class ReleaseHook(BaseModel):
    """A GitLab Release Hook payload (``object_kind: release``); every value the receiver
    keeps is bounded like the ``Release`` it becomes; other fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    object_kind: Literal["release"]
    action: Literal["create", "update", "delete"]
    tag: TagName
    name: ReleaseName | None = None
    description: Text | None = None  # any length up to the body's; the run gets an excerpt
    url: WebUrl
    released_at: GitLabTime
    created_at: GitLabTime | None = None
    project: HookProject


def hook_object(body: bytes, kind: str, object_kind: str) -> dict[str, Any]:
    """The body as the JSON object a ``kind`` delivery must be, else ``Refused`` (400)."""
    data = parse_json_body(body)
    if not isinstance(data, dict):
        raise Refused(400, f"body must be a JSON object, got {type(data).__name__}")
    if data.get("object_kind") != object_kind:
        found = _short(data.get("object_kind"))
        raise Refused(400, f"a {kind} must have object_kind {object_kind!r}, got {found}")
    return data


def _validated(model: type[_Model], data: Any, what: str) -> _Model:
    """``data`` as ``model``, else ``Refused`` (422) naming every field that is wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Refused(422, f"{what} payload is not valid", describe_validation_error(exc)) from None


def parse_release_hook(body: bytes) -> ReleaseHook:
    """The one way a body becomes a ``ReleaseHook``; anything else raises ``Refused``."""
    data = hook_object(body, RELEASE_HOOK, "release")
    return _validated(ReleaseHook, data, "release hook")


def release_parameter(hook: ReleaseHook, delivery: str) -> Release:
    """What the on-release run receives: the fields it uses, the description as an excerpt."""
    project = hook.project
    try:
        return Release.model_validate(
            {
                "action": hook.action,
                "tag": hook.tag,
                # GitLab names a release after its tag unless told otherwise; never null here.
                "name": hook.name or hook.tag,
                "description": description_excerpt(hook.description or ""),
                "url": hook.url,
                "released_at": hook.released_at.astimezone(UTC).isoformat(),
                "project": {
                    "id": project.id,
                    "path_with_namespace": project.path_with_namespace,
                    "web_url": project.web_url,
                },
                "delivery": delivery,
            }
        )
    except ValidationError as exc:  # the two models disagree: refuse rather than send it
        raise Refused(
            422, "release hook payload is not valid", describe_validation_error(exc)
        ) from None


# --- merge request and push hooks ---------------------------------------------------------------

# Any action GitLab sends, bounded: which ones a preview needs is decided after validation, so a
# new action GitLab adds is ignored, not refused.
HookAction = Annotated[str, Field(min_length=1, max_length=40), AfterValidator(check_text)]


@dataclass(frozen=True)
class Ignored:
    """A delivery answered 200 ``{"status": "ignored", "reason": ...}``: nothing to run."""

    reason: str


class _MergeRequestState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    action: HookAction
    oldrev: Sha | None = None  # only when the update brought new commits


class MergeRequestRoute(BaseModel):
    """What decides whether a Merge Request Hook needs a preview; checked before the rest, so
    a hook that needs none (a close, another project) is ignored whatever else it holds."""

    model_config = ConfigDict(extra="ignore")

    object_kind: Literal["merge_request"]
    object_attributes: _MergeRequestState
    project: RepoProject  # the target project: the one the merge request is in


class _LastCommit(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: Sha


class _MergeRequestAttributes(_MergeRequestState):
    iid: GitLabId
    title: ReleaseName = ""  # bounded as the preview's MergeRequestChange.title
    source_branch: BranchName
    target_branch: BranchName
    last_commit: _LastCommit
    url: WebUrl | None = None


class MergeRequestHook(MergeRequestRoute):
    """A GitLab Merge Request Hook payload (``object_kind: merge_request``): the values the
    preview's ``MergeRequestChange`` is made of, bounded like it; other fields are ignored."""

    object_attributes: _MergeRequestAttributes


class PushRoute(BaseModel):
    """What decides whether a Push Hook applies launches: the project, the branch, the commit."""

    model_config = ConfigDict(extra="ignore")

    object_kind: Literal["push"]
    ref: BranchRef
    after: Sha
    project: RepoProject


class PushHook(PushRoute):
    """A GitLab Push Hook payload (``object_kind: push``): the values of apply-launches'
    ``Push``; the commits and their file lists are ignored (the flow asks GitLab for the
    whole change between ``before`` and ``after``)."""

    before: Sha


def not_launches_repo(project: RepoProject, launches_projects: frozenset[str]) -> Ignored | None:
    """Why a hook of ``project`` is ignored, if it is not the launches repository's."""
    path = project.path_with_namespace
    if any(same_project(name, path) for name in launches_projects):
        return None
    configured = ", ".join(sorted(launches_projects))
    return Ignored(
        f"project {path!r} is not the launches repository (TMINUS_LAUNCHES_REPO is "
        f"{configured!r}); only its merge requests and pushes are acted on"
    )


def ignore_merge_request(route: MergeRequestRoute, launches: frozenset[str]) -> Ignored | None:
    """Why a merge request hook needs no preview, or None when it needs one."""
    not_ours = not_launches_repo(route.project, launches)
    if not_ours is not None:
        return not_ours
    state = route.object_attributes
    if state.action not in PREVIEW_ACTIONS:
        return Ignored(
            f"merge request action {_short(state.action)} needs no preview; only "
            f"{', '.join(PREVIEW_ACTIONS)} (with new commits) do"
        )
    if state.action == "update" and state.oldrev is None:
        return Ignored(
            "merge request update without new commits (no oldrev: a title, label or "
            "description edit); the preview depends on the commits only"
        )
    return None


def ignore_push(route: PushRoute, launches: frozenset[str]) -> Ignored | None:
    """Why a push hook applies no launches, or None when it does."""
    not_ours = not_launches_repo(route.project, launches)
    if not_ours is not None:
        return not_ours
    branch = route.ref.removeprefix(BRANCH_PREFIX)
    default = route.project.default_branch
    if default is None:
        return Ignored(
            f"the hook names no default branch of {route.project.path_with_namespace!r}; "
            "only pushes to the default branch apply launches"
        )
    if branch != default:
        return Ignored(
            f"push to branch {branch!r}, not the default branch {default!r}; only pushes "
            "to the default branch apply launches (merge requests get a preview)"
        )
    if route.after == NO_COMMIT:
        return Ignored(f"push deletes branch {branch!r}; there is nothing to apply")
    return None


def merge_request_change(
    body: bytes, delivery: str, launches: frozenset[str]
) -> MergeRequestChange | Ignored:
    """The one way a body becomes the preview's parameter, or why none is needed; anything
    else raises ``Refused``."""
    data = hook_object(body, MERGE_REQUEST_HOOK, "merge_request")
    route = _validated(MergeRequestRoute, data, "merge request hook")
    ignored = ignore_merge_request(route, launches)
    if ignored is not None:
        return ignored
    hook = _validated(MergeRequestHook, data, "merge request hook")
    attributes = hook.object_attributes
    parameter = {
        "action": attributes.action,
        "iid": attributes.iid,
        "title": attributes.title,
        "source_branch": attributes.source_branch,
        "target_branch": attributes.target_branch,
        "head_sha": attributes.last_commit.id,
        "url": attributes.url,
        "project": hook.project.model_dump(),
        "delivery": delivery,
    }
    # The two models disagreeing would be a bug here: refuse rather than send it.
    return _validated(MergeRequestChange, parameter, "merge request hook")


def push_parameter(body: bytes, delivery: str, launches: frozenset[str]) -> Push | Ignored:
    """The one way a body becomes apply-launches' parameter, or why none is needed; anything
    else raises ``Refused``."""
    data = hook_object(body, PUSH_HOOK, "push")
    route = _validated(PushRoute, data, "push hook")
    ignored = ignore_push(route, launches)
    if ignored is not None:
        return ignored
    hook = _validated(PushHook, data, "push hook")
    parameter = {
        "ref": hook.ref,
        "before": hook.before,
        "after": hook.after,
        "project": hook.project.model_dump(),
        "delivery": delivery,
    }
    return _validated(Push, parameter, "push hook")


# --- the event ---------------------------------------------------------------------------------


def delivery_key(headers: Mapping[str, str], body: bytes) -> str:
    """What identifies one delivery across resends: ``Idempotency-Key``, else the event UUID,
    else the body's hash (a resend of the same body is then the same delivery)."""
    for name in ("idempotency-key", "x-gitlab-event-uuid"):
        value = (headers.get(name) or "").strip()
        if value:
            if len(value) > DELIVERY_MAX_CHARS:
                raise Refused(
                    400,
                    f"header {name} is longer than {DELIVERY_MAX_CHARS} characters; "
                    "GitLab sends a UUID",
                )
            return value
    return "sha256:" + hashlib.sha256(body).hexdigest()


def event_id_for(key: str) -> uuid.UUID:
    return uuid.uuid5(EVENT_ID_NAMESPACE, key)


def release_event(
    hook: ReleaseHook, *, key: str, instance: str | None, occurred: datetime
) -> dict[str, Any]:
    """The Prefect event for a release hook. Its payload is the on-release ``Release``
    parameter as JSON (the trigger passes ``{{ event.payload }}`` as is), so the run gets
    exactly these bounded fields."""
    project = hook.project
    resource = {
        "prefect.resource.id": f"gitlab.release.{project.id}.{hook.tag}",
        "prefect.resource.name": f"{project.path_with_namespace} {hook.tag}",
        "gitlab.project": project.path_with_namespace,
    }
    if instance:
        resource["gitlab.instance"] = instance
    return {
        "id": str(event_id_for(key)),
        "occurred": occurred.astimezone(UTC).isoformat(),
        "event": f"gitlab.release.{hook.action}",
        "resource": resource,
        "related": [],
        "payload": release_parameter(hook, key).model_dump(mode="json"),
    }


def _project_resource(
    resource_id: str, name: str, project: RepoProject, instance: str | None
) -> dict[str, str]:
    resource = {
        "prefect.resource.id": resource_id,
        "prefect.resource.name": name,
        "gitlab.project": project.path_with_namespace,
    }
    if instance:
        resource["gitlab.instance"] = instance
    return resource


def merge_request_event(
    change: MergeRequestChange, *, key: str, instance: str | None, occurred: datetime
) -> dict[str, Any]:
    """The Prefect event for a merge request that needs a preview; its payload is the preview's
    ``MergeRequestChange`` parameter as JSON."""
    project = change.project
    return {
        "id": str(event_id_for(key)),
        "occurred": occurred.astimezone(UTC).isoformat(),
        "event": f"gitlab.merge_request.{change.action}",
        "resource": _project_resource(
            f"gitlab.merge_request.{project.id}.{change.iid}",
            f"{project.path_with_namespace}!{change.iid}",
            project,
            instance,
        ),
        "related": [],
        "payload": change.model_dump(mode="json"),
    }


def push_event(push: Push, *, key: str, instance: str | None, occurred: datetime) -> dict[str, Any]:
    """The Prefect event for a push to the launches repository's default branch; its payload is
    apply-launches' ``Push`` parameter as JSON."""
    project = push.project
    return {
        "id": str(event_id_for(key)),
        "occurred": occurred.astimezone(UTC).isoformat(),
        "event": "gitlab.push",
        "resource": _project_resource(
            f"gitlab.push.{project.id}.{push.branch}",
            f"{project.path_with_namespace} {push.branch}",
            project,
            instance,
        ),
        "related": [],
        "payload": push.model_dump(mode="json"),
    }


def hook_event(
    kind: str,
    body: bytes,
    *,
    key: str,
    instance: str | None,
    occurred: datetime,
    launches: frozenset[str],
) -> dict[str, Any] | Ignored:
    """The Prefect event for a delivery of a handled ``kind``, or why it is ignored; anything
    not valid raises ``Refused``."""
    if kind == MERGE_REQUEST_HOOK:
        change = merge_request_change(body, key, launches)
        if isinstance(change, Ignored):
            return change
        return merge_request_event(change, key=key, instance=instance, occurred=occurred)
    if kind == PUSH_HOOK:
        push = push_parameter(body, key, launches)
        if isinstance(push, Ignored):
            return push
        return push_event(push, key=key, instance=instance, occurred=occurred)
    hook = parse_release_hook(body)
    return release_event(hook, key=key, instance=instance, occurred=occurred)


def _header_problems(headers: Headers) -> Refused | None:
    for name in SINGLE_HEADERS:
        values = headers.getlist(name)
        if len(set(values)) > 1:
            return Refused(
                400,
                f"header {name} is sent {len(values)} times with different values; send it once",
            )
    declared = headers.get("content-length")
    if declared is not None and not re.fullmatch(r"[0-9]{1,19}", declared):
        return Refused(400, "invalid Content-Length; send the body's size in bytes")
    instance = headers.get("x-gitlab-instance")
    if instance is not None and len(instance) > URL_MAX_CHARS:
        return Refused(400, f"header x-gitlab-instance is longer than {URL_MAX_CHARS} characters")
    return None


def _is_json(content_type: str | None) -> bool:
    media, _, params = (content_type or "").partition(";")
    if media.strip().lower() != "application/json":
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


# --- the sender --------------------------------------------------------------------------------


class GroupCommit:
    """Outbox inserts of concurrent deliveries, written together: while one transaction is
    written (and fsync'd), the rows that arrive wait and go in the next one, so a burst costs a
    few fsyncs instead of one per delivery. Each answer still waits until its own row is on
    disk. With no concurrency nothing waits for a batch to fill: a lone row is written at once.
    """

    MAX_BATCH = 256

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._queue: list[tuple[tuple[str, str, str], asyncio.Future[bool]]] = []
        self._task: asyncio.Task[None] | None = None

    async def add(self, delivery_key: str, event_id: str, event_json: str) -> bool:
        """Store a delivery; False when its key is already stored (a resend)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append(((delivery_key, event_id, event_json), future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="tminus-outbox-writer")
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self.MAX_BATCH]
            del self._queue[: self.MAX_BATCH]
            try:
                added = await asyncio.to_thread(self._outbox.add_many, [row for row, _ in batch])
            except Exception as exc:  # every request of the batch answers with the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), was_added in zip(batch, added, strict=True):
                if not future.done():  # its client may have gone away meanwhile
                    future.set_result(was_added)

    async def aclose(self) -> None:
        """Wait for the rows already accepted to be written."""
        if self._task is not None:
            await self._task


class EventSender:
    """Posts pending outbox rows to Prefect in order; on failure keeps them and backs off."""

    def __init__(
        self, outbox: Outbox, config: WebhookConfig, busy: Callable[[], bool] = lambda: False
    ) -> None:
        self.outbox = outbox
        self.config = config
        self.busy = busy  # True while deliveries are arriving
        self.api_url = config.prefect_api_url.rstrip("/")
        self.wake = asyncio.Event()
        self.failures = 0
        self.last_error: str | None = None
        headers = {"Content-Type": "application/json"}
        if config.prefect_api_auth_string is not None:
            secret = config.prefect_api_auth_string.get_secret_value().encode()
            headers["Authorization"] = "Basic " + base64.b64encode(secret).decode()
        self.client = httpx.AsyncClient(headers=headers, timeout=config.send_timeout)

    def backoff(self) -> float:
        """Seconds to wait after ``failures`` failed rounds in a row: doubling, capped."""
        exponent = min(self.failures - 1, 20)
        return float(min(self.config.max_backoff, self.config.send_interval * 2**exponent))

    async def run(self) -> None:
        """Drain, then wait for an insert or the next interval; back off while Prefect fails."""
        while True:
            self.wake.clear()
            try:
                delivered = await self.send_pending()
            except Exception as exc:  # a broken database must not kill the loop silently
                logger.exception("webhook sender: unexpected error")
                self.last_error = f"{type(exc).__name__}: {exc}"
                delivered = False
            if delivered:
                if self.failures:
                    logger.info("Prefect reachable again after %d failed rounds", self.failures)
                self.failures = 0
                self.last_error = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=self.config.send_interval)
            else:
                self.failures += 1
                # Wake-ups are ignored here on purpose: new deliveries are safe on disk, and
                # retrying on every one of them would hammer a Prefect that is struggling.
                await asyncio.sleep(self.backoff())

    async def send_pending(self) -> bool:
        """Send every pending row, up to ``SEND_BATCH`` in one request (Prefect's ``/events``
        takes a list), in order; False at the first one Prefect could not take. A batch
        Prefect refuses as malformed is sent again row by row, so only the bad row is set
        aside."""
        hold_until = asyncio.get_running_loop().time() + BURST_HOLD_SECONDS
        while True:
            await self._lull(hold_until)
            rows = await asyncio.to_thread(self.outbox.pending, SEND_BATCH)
            if not rows:
                return True
            sent = await self._send_batch(rows) if len(rows) > 1 else None
            if sent is False:
                return False
            if sent is None:
                for row in rows:
                    if not await self._send(row):
                        return False

    async def _lull(self, hold_until: float) -> None:
        """Wait while deliveries are arriving, until ``hold_until`` at the latest."""
        loop = asyncio.get_running_loop()
        while self.busy() and loop.time() < hold_until:
            await asyncio.sleep(LULL_POLL_SECONDS)

    async def _send_batch(self, rows: list[OutboxRow]) -> bool | None:
        """True when Prefect took them all, False when it could not be reached or failed,
        None when it refused the batch as malformed (send them one by one)."""
        body = ("[" + ",".join(row.event_json for row in rows) + "]").encode()
        try:
            response = await self.client.post(f"{self.api_url}/events", content=body)
        except httpx.HTTPError as exc:
            return await self._failed(rows[0], f"{type(exc).__name__}: {exc or 'no answer'}")
        if response.is_success:
            await asyncio.to_thread(self.outbox.mark_sent_many, [row.seq for row in rows])
            logger.info(
                "sent %d events to Prefect (deliveries %s ...)", len(rows), rows[0].delivery_key
            )
            return True
        if response.status_code in REJECTED_STATUSES:
            return None
        return await self._failed(
            rows[0], f"Prefect answered {response.status_code}: {response.text[:500]}"
        )

    async def _send(self, row: OutboxRow) -> bool:
        url = f"{self.api_url}/events"
        try:
            response = await self.client.post(url, content=f"[{row.event_json}]".encode())
        except httpx.HTTPError as exc:
            return await self._failed(row, f"{type(exc).__name__}: {exc or 'no answer'}")
        if response.is_success:
            await asyncio.to_thread(self.outbox.mark_sent, row.seq)
            logger.info("sent event %s (delivery %s) to Prefect", row.event_id, row.delivery_key)
            return True
        error = f"Prefect answered {response.status_code}: {response.text[:500]}"
        if response.status_code in REJECTED_STATUSES:
            logger.error("Prefect rejected event %s; kept as 'rejected': %s", row.event_id, error)
            await asyncio.to_thread(self.outbox.mark_failed, row.seq, error, rejected=True)
            return True  # the queue moves on; the row stays in the outbox for a person
        return await self._failed(row, error)

    async def _failed(self, row: OutboxRow, error: str) -> bool:
        if self.failures == 0:
            logger.warning("cannot send event %s to Prefect, will retry: %s", row.event_id, error)
        self.last_error = error
        await asyncio.to_thread(self.outbox.mark_failed, row.seq, error)
        return False

    async def prefect_reachable(self) -> bool:
        try:
            response = await self.client.get(
                f"{self.api_url}/health", timeout=min(2.0, self.config.send_timeout)
            )
        except httpx.HTTPError:
            return False
        return response.is_success

    async def aclose(self) -> None:
        await self.client.aclose()


# --- the app -----------------------------------------------------------------------------------


def _token_ok(expected: SecretStr | None, given: str | None) -> bool:
    if expected is None:
        return True
    if given is None:
        return False
    # Constant time, so the answer's timing says nothing about how much of the token matched.
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole body within ``timeout`` seconds and ``limit`` bytes (a client can lie about
    Content-Length, send chunks without one, or stop halfway), else ``Refused``."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Refused(413, f"body larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise Refused(
            408, f"the body did not arrive within {timeout:g} s; send it in one go"
        ) from None
    except ClientDisconnect:
        raise Refused(400, "the client went away before the body ended") from None
    return b"".join(chunks)


def create_app(config: WebhookConfig) -> Starlette:
    """The receiver app; its lifespan runs the sender (serve it with ``server_config``)."""
    outbox = Outbox(config.db_path)
    last_arrival = -QUIET_SECONDS  # on the event loop's clock

    def busy() -> bool:
        return asyncio.get_running_loop().time() - last_arrival < QUIET_SECONDS

    sender = EventSender(outbox, config, busy=busy)
    writer = GroupCommit(outbox)

    async def gitlab_hook(request: Request) -> Response:
        nonlocal last_arrival
        last_arrival = asyncio.get_running_loop().time()
        try:
            return await accept(request)
        except Refused as refused:
            if refused.status != 401:
                logger.info("refused a delivery (%d): %s", refused.status, refused.message)
            return refused.response()

    async def accept(request: Request) -> Response:
        headers = request.headers
        problem = _header_problems(headers)
        if problem is not None:
            raise problem
        kind = headers.get("x-gitlab-event")
        limit = config.body_limit(kind)
        declared = headers.get("content-length")
        if declared is not None and int(declared) > limit:
            raise Refused(413, f"body larger than {limit} bytes")
        if not _token_ok(config.token, headers.get("x-gitlab-token")):
            client = request.client.host if request.client else "?"
            logger.warning("refused a delivery from %s: missing or wrong X-Gitlab-Token", client)
            raise Refused(401, "invalid X-Gitlab-Token")
        # 2xx for what is ignored: GitLab disables hooks that keep getting errors, and these
        # are not errors.
        if kind not in HANDLED_EVENTS:
            handled = ", ".join(repr(name) for name in HANDLED_EVENTS)
            reason = f"X-Gitlab-Event {_short(kind)} is not handled; only {handled} are"
            return ignored(reason)
        if kind != RELEASE_HOOK and not config.launches_projects:
            return ignored(
                f"{kind}s are acted on only for the launches repository, and none is "
                "configured: set TMINUS_LAUNCHES_REPO to its project path (group/project)"
            )
        if not _is_json(headers.get("content-type")):
            got = _short(headers.get("content-type"))
            raise Refused(415, f"Content-Type must be application/json (UTF-8), got {got}")
        body = await read_body(request, limit, config.body_timeout)
        key = delivery_key(headers, body)
        event = await asyncio.to_thread(
            hook_event,
            kind,
            body,
            key=key,
            instance=headers.get("x-gitlab-instance"),
            occurred=datetime.now(UTC),
            launches=config.launches_projects,
        )
        if isinstance(event, Ignored):
            logger.info("ignored a %s (delivery %s): %s", kind, key, event.reason)
            return ignored(event.reason)
        event_id = event["id"]
        added = await writer.add(key, event_id, _json_bytes(event).decode())
        if not added:
            logger.info("duplicate delivery %s (event %s): nothing new", key, event_id)
            return _JSON({"status": "duplicate", "event_id": event_id})
        sender.wake.set()
        logger.info(
            "accepted %s for %s (delivery %s, event %s)",
            event["event"],
            event["resource"]["prefect.resource.name"],
            key,
            event_id,
        )
        return _JSON({"status": "accepted", "event_id": event_id}, status_code=202)

    def ignored(reason: str) -> Response:
        return _JSON({"status": "ignored", "reason": reason})

    async def healthz(request: Request) -> Response:
        # Always 200 while we run: a receiver that is up keeps accepting deliveries even when
        # Prefect is down, so restarting it would not help.
        stats = await asyncio.to_thread(outbox.stats)
        age = stats.oldest_pending_seconds
        return _JSON(
            {
                "status": "ok",
                "pending": stats.pending,
                "oldest_pending_seconds": round(age, 3) if age is not None else None,
                "rejected": stats.rejected,
                "prefect": "reachable" if await sender.prefect_reachable() else "unreachable",
                "last_send_error": sender.last_error,
            }
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        # Unknown paths and methods: JSON like every other answer.
        assert isinstance(exc, HTTPException)
        return _error(
            exc.status_code,
            f"{exc.detail}: {request.method} {request.url.path}; deliveries go to POST {HOOK_PATH}",
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if config.token is None:
            logger.warning(
                "no webhook token configured: every request to %s is accepted", HOOK_PATH
            )
        task = asyncio.create_task(sender.run(), name="tminus-webhook-sender")
        try:
            yield
        finally:
            # No flush on the way out: pending rows are on disk and go out on the next start.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await sender.aclose()
            await writer.aclose()
            outbox.close()

    return Starlette(
        routes=[
            Route(HOOK_PATH, gitlab_hook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )


# --- the server --------------------------------------------------------------------------------


def _raw_json_response(status: int, reason: str, message: str) -> bytes:
    body = _json_bytes({"error": message})
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for every request's head.

    uvicorn times out only idle connections after a response (``timeout_keep_alive``): a
    client that connects and then sends nothing, or half a request line, would hold its
    connection for good. Here each head must be complete ``head_timeout`` seconds after the
    connection opens or the previous response ends (408 and close); the body then has the
    app's own deadline. uvicorn's 400 for malformed HTTP is JSON, like every other answer.
    """

    head_timeout: float = 5.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self.transport.write(
            _raw_json_response(
                400,
                "Bad Request",
                f"malformed HTTP request ({msg.rstrip('.')}); send one well-formed HTTP/1.1 "
                "request with each header once",
            )
        )
        self.transport.close()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        if not self.transport.is_closing():
            self._head_timer = self.loop.call_later(
                self.head_timeout, self._head_timer_fired, self.cycle
            )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timer_fired(self, cycle_when_armed: object) -> None:
        self._head_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is not cycle_when_armed:
            return  # a new request's head arrived in time
        if cycle is not None and not cycle.response_complete:
            return  # a pipelined request is being answered; its end re-arms the timer
        if self.conn.trailing_data[0]:  # half a head: tell the client why
            self.transport.write(
                _raw_json_response(
                    408,
                    "Request Timeout",
                    f"the request head did not arrive within {self.head_timeout:g} s; "
                    "send the request in one go",
                )
            )
        self.transport.close()


def server_config(
    app: Any, config: WebhookConfig, *, host: str, port: int, log_level: str = "info"
) -> uvicorn.Config:
    """How the receiver is served: lifespan on (it runs the sender), bounded slow clients."""
    protocol = type(
        "ReceiverProtocol", (BoundedH11Protocol,), {"head_timeout": config.header_timeout}
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        http=protocol,
        # Seconds an idle connection stays open after a response (uvicorn's default, made
        # explicit: GitLab opens a connection per delivery).
        timeout_keep_alive=config.keep_alive_timeout,
        # uvicorn's default cap on a request head: 16 KiB.
        h11_max_incomplete_event_size=16 * 1024,
    )


def serve(config: WebhookConfig, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Run the receiver in the foreground until interrupted (``tminus webhook``)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logger.setLevel(logging.INFO)
    uvicorn.Server(server_config(create_app(config), config, host=host, port=port)).run()
