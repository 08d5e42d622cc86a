"""Fuzzing the GitLab webhook receiver over real HTTP on loopback.

Generated deliveries of each handled kind (GitLab's documented Release, Merge Request and
Push Hook payloads from ``tests/fixtures`` with mutated values, random bodies, deep nesting,
huge values, bad encodings, odd and duplicated headers, sometimes under another kind's
``X-Gitlab-Event``) and raw HTTP with broken framing go to a receiver served exactly as
``tminus webhook`` serves it, with the merge request and push fixtures' projects as launches
repositories. Every answer must come within ``ANSWER_BOUND`` seconds, never be a 5xx, and be
JSON; every delivery answered 202 must be deliverable: its stored event's payload is the flow's
parameter, well under 512 KiB. A release, rendered as the deployment trigger renders it, passes
Prefect's parameter size limit and the on-release deployment's parameter schema and validates
as ``Release``; a merge request validates as the preview's ``MergeRequestChange`` and a push
as apply-launches' ``Push``, and neither is one the receiver should have ignored.

Profiles (``TMINUS_WEBHOOK_FUZZ=ci|long``): ``webhook-fuzz-ci`` (the default) runs a few
hundred derandomized examples in seconds; ``webhook-fuzz-long`` runs about 2,000 requests, as
``python benchmarks/webhook_fuzz.py`` does, printing the figures.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import socket
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tminus.deployments.webhook import (
    HANDLED_EVENTS,
    HOOK_PATH,
    MAX_BODY_BYTES,
    MAX_REPO_BODY_BYTES,
    MERGE_REQUEST_HOOK,
    PREVIEW_ACTIONS,
    PUSH_HOOK,
    RELEASE_HOOK,
)
from tminus.domain.release import Release
from tminus.domain.repository import NO_COMMIT, MergeRequestChange, Push
from tminus_sandbox.app import ThreadedServer

from .test_webhook import (
    TOKEN,
    LifespanServer,
    PrefectEventsStandIn,
    make_config,
    run_parameters,
    wait_until,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PAYLOAD: dict[str, Any] = json.loads((FIXTURES / "gitlab_release_create.json").read_text())
MERGE_REQUEST: dict[str, Any] = json.loads(
    (FIXTURES / "gitlab_merge_request_hook.json").read_text()
)
PUSH: dict[str, Any] = json.loads((FIXTURES / "gitlab_push_hook.json").read_text())
# The receiver under fuzz acts on the merge request and push fixtures' projects.
LAUNCHES = frozenset(
    {MERGE_REQUEST["project"]["path_with_namespace"], PUSH["project"]["path_with_namespace"]}
)
BASE_HEADERS: dict[str, str] = {
    **json.loads((FIXTURES / "gitlab_webhook_headers_release.json").read_text()),
    "X-Gitlab-Token": TOKEN,
}
_LAUNCHES_LOWER = {name.lower() for name in LAUNCHES}
# GitLab gives up after 10 s; the receiver's own deadlines are set to 1 s below.
ANSWER_BOUND = 5.0
DEADLINE = 1.0
# "Well under" Prefect's 512 KiB parameter limit.
PARAMETERS_BOUND = 64 * 1024

_CI = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("webhook-fuzz-ci", _CI)
settings.register_profile("webhook-fuzz-long", _CI, max_examples=1800, derandomize=False)
RAW_EXAMPLES = {"webhook-fuzz-ci": 40, "webhook-fuzz-long": 200}


def profile_name() -> str:
    return f"webhook-fuzz-{os.environ.get('TMINUS_WEBHOOK_FUZZ', 'ci')}"


# --- what is sent ---------------------------------------------------------------------------------

_TEXT = st.text(
    alphabet=st.characters(exclude_categories=()),  # surrogates and controls included
    max_size=40,
)
_JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)
_JSON = st.recursive(
    _JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)
_OFFSETS = st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
).map(timezone)
_TIMES = (
    st.datetimes(timezones=_OFFSETS).map(lambda t: t.isoformat())
    | st.datetimes().map(lambda t: t.strftime("%Y-%m-%d %H:%M:%S UTC"))
    | st.sampled_from(
        [
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+23:59",
            "2020-11-02 12:55:12 UTC",
            "2020-11-02 12:55:12",
            "2020-11-02",
            "1604321712",
            "",
        ]
    )
)
_TAGS = st.sampled_from(
    ["v1.1", "../x", "-x", "/x", "a..b", "v1.lock", "x@{1}", "@", "v 1", "v1\x00", "v" * 256]
) | st.text(alphabet="v0123456789.-/_~^:?*[\\@{} é", min_size=1, max_size=20)
_IDS = st.integers(min_value=-(2**40), max_value=2**40) | st.sampled_from(
    [0, 1, 2**31 - 1, 2**31, 2**63, 10**30, True, 2.0, "2"]
)
_URLS = st.sampled_from(
    ["https://example.com/r", "http://h/", "javascript:alert(1)", "ftp://x/", "https://", ""]
) | st.text(max_size=30).map(lambda t: "https://example.com/" + t)
_PATHS = st.sampled_from(
    ["group/project", "a/b/c", "../etc", "a", "a/b.git", "a//b", "-a/b", "a/" + "b" * 300]
) | st.text(alphabet="ab._-/0", min_size=1, max_size=20)
_DESCRIPTION_SIZES = st.sampled_from([0, 100, 5_000, 900_000, 1_500_000, MAX_BODY_BYTES + 1])


@st.composite
def _descriptions(draw: st.DrawFn) -> str:
    size = draw(_DESCRIPTION_SIZES)
    tier = draw(st.sampled_from(["", "Launch-Tier: L1\n", "Launch-Tier: XL\n", "launch-tier:"]))
    head = draw(_TEXT)
    line = draw(st.sampled_from(["x" * 1000, "A changelog line.\n"]))  # one huge line, or many
    return head + "\n" + line * (size // len(line)) + "\n" + tier


# Per field of the payload, values worth trying; any other path gets random JSON.
_RELEASE_VALUES: dict[tuple[str, ...], st.SearchStrategy[Any]] = {
    ("tag",): _TAGS,
    ("released_at",): _TIMES,
    ("created_at",): _TIMES,
    ("project", "id"): _IDS,
    ("project", "path_with_namespace"): _PATHS,
    ("project", "web_url"): _URLS,
    ("url",): _URLS,
    ("name",): _TEXT | st.integers(min_value=1_000, max_value=1_100).map(lambda n: "n" * n),
    ("description",): _descriptions(),
    ("action",): st.sampled_from(["create", "update", "delete", "explode", ""]),
    ("object_kind",): st.sampled_from(["release", "tag_push", ""]),
}

_SHAS = st.sampled_from(
    [
        "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        "95790bf891e76fee5e1747ab589903a6a1f80f22",
        NO_COMMIT,
        "0" * 64,
        "a" * 64,
        "DA1560886D4F094C3E6C9EF40349F7D38B5D27D7",
        "da15608",
        "",
        None,
    ]
) | st.text(alphabet="0123456789abcdefg", min_size=39, max_size=41)
_BRANCHES = _TAGS | st.sampled_from(["master", "main", "ms-viewport", None])
_PROJECT_VALUES: dict[tuple[str, ...], st.SearchStrategy[Any]] = {
    ("project", "id"): _IDS,
    ("project", "path_with_namespace"): _PATHS
    | st.sampled_from(sorted(LAUNCHES) + [p.upper() for p in LAUNCHES]),
    ("project", "web_url"): _URLS | st.none(),
    ("project", "default_branch"): _BRANCHES,
}
_MR_DESCRIPTION_SIZES = st.sampled_from([0, 100, 900_000, 3_000_000, MAX_REPO_BODY_BYTES + 1])
_MERGE_REQUEST_VALUES: dict[tuple[str, ...], st.SearchStrategy[Any]] = {
    **_PROJECT_VALUES,
    ("object_kind",): st.sampled_from(["merge_request", "push", "release", ""]),
    ("object_attributes", "action"): st.sampled_from(
        [
            *PREVIEW_ACTIONS,
            *("close", "merge", "approved", "unapproved", "approval", "unapproval"),
            *("", "explode", "a" * 41),
        ]
    )
    | _TEXT,
    ("object_attributes", "oldrev"): _SHAS,
    ("object_attributes", "iid"): _IDS,
    ("object_attributes", "title"): _TEXT
    | st.integers(min_value=1_000, max_value=1_100).map(lambda n: "t" * n),
    ("object_attributes", "source_branch"): _BRANCHES,
    ("object_attributes", "target_branch"): _BRANCHES,
    ("object_attributes", "last_commit"): st.none() | st.builds(dict, id=_SHAS),
    ("object_attributes", "last_commit", "id"): _SHAS,
    ("object_attributes", "url"): _URLS | st.none(),
    ("object_attributes", "description"): _MR_DESCRIPTION_SIZES.map(lambda n: "d" * n),
}
# One commit of a push listing 2,000 paths (about 80 KB): 20 of them is GitLab's most, 60 is
# over a release hook's limit and under a push's, 120 is over a push's.
_ADDED = tuple(f"launches/a-directory-name/launch-{n:05}.yaml" for n in range(2_000))


def _commits(count: int) -> list[dict[str, Any]]:
    # Fresh objects each time: a later mutation must not change what another example draws.
    return [{**copy.deepcopy(PUSH["commits"][0]), "added": list(_ADDED)} for _ in range(count)]


_PUSH_VALUES: dict[tuple[str, ...], st.SearchStrategy[Any]] = {
    **_PROJECT_VALUES,
    ("object_kind",): st.sampled_from(["push", "tag_push", "merge_request", ""]),
    ("ref",): st.sampled_from(
        ["refs/heads/master", "refs/heads/main", "refs/tags/v1.0.0", "master", "refs/heads/"]
    )
    | _TAGS.map(lambda tag: f"refs/heads/{tag}"),
    ("before",): _SHAS,
    ("after",): _SHAS,
    ("commits",): st.sampled_from([0, 2, 20, 60, 120]).map(_commits),
}


@dataclass(frozen=True)
class Kind:
    """One handled X-Gitlab-Event: its documented payload and the values worth trying."""

    event: str
    payload: dict[str, Any]
    values: dict[tuple[str, ...], st.SearchStrategy[Any]]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index))


KINDS = (
    Kind(RELEASE_HOOK, PAYLOAD, _RELEASE_VALUES),
    Kind(MERGE_REQUEST_HOOK, MERGE_REQUEST, _MERGE_REQUEST_VALUES),
    Kind(PUSH_HOOK, PUSH, _PUSH_VALUES),
)


def _parent(payload: Any, path: tuple[Any, ...]) -> Any:
    """The container holding ``path``'s last step, or None where an earlier change removed it."""
    node = payload
    for part in path[:-1]:
        if isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            continue
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, dict | list) else None


@st.composite
def mutated_payloads(draw: st.DrawFn, kind: Kind) -> Any:
    """The kind's real payload with a few values changed, removed or added."""
    payload = copy.deepcopy(kind.payload)
    kept = st.sampled_from(sorted(kind.values))
    any_path = st.sampled_from(sorted(set(_paths(kind.payload)), key=str))
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 3]))):
        # Mostly the fields the receiver keeps; sometimes any other part of the payload.
        path = draw(kept | kept | any_path)
        node = _parent(payload, path)
        if node is None:
            continue
        action = draw(st.sampled_from(["set"] * 6 + ["delete", "nest"]))
        if action == "delete" and isinstance(node, dict):
            node.pop(path[-1], None)
        elif action == "nest":
            # Nested here, as text: json.dumps cannot write what is deepest.
            depth = draw(st.integers(min_value=1, max_value=3_000))
            _set(node, path[-1], f"{_NEST}{depth}")
        else:
            _set(node, path[-1], draw(kind.values.get(tuple(path), _JSON)))
    return payload


_NEST = "\u2063nest:"
_NEST_MARK = re.compile(r'"(?:\\u2063|\u2063)nest:(\d+)"')  # as written by ensure_ascii or not


def _nested(text: str) -> str:
    """JSON text with each nesting marker replaced by arrays that deep."""
    return _NEST_MARK.sub(lambda m: "[" * int(m[1]) + "0" + "]" * int(m[1]), text)


def _set(node: dict[Any, Any] | list[Any], key: Any, value: Any) -> None:
    if isinstance(node, dict) or (isinstance(key, int) and key < len(node)):
        node[key] = value


@st.composite
def bodies(draw: st.DrawFn, kind: Kind) -> bytes:
    """Bytes on the wire: mostly JSON of a (mutated) payload, sometimes mangled."""
    form = draw(st.sampled_from(["payload"] * 6 + ["json", "binary", "encoding", "mangle", "nest"]))
    if form == "json":
        return json.dumps(draw(_JSON)).encode()
    if form == "binary":
        return draw(st.binary(max_size=200))
    payload = draw(mutated_payloads(kind))
    if form == "encoding":
        encoding = draw(st.sampled_from(["utf-16", "utf-32", "utf-8-sig", "latin-1", "cp1252"]))
        return _nested(json.dumps(payload, ensure_ascii=False)).encode(encoding, "replace")
    body = _nested(json.dumps(payload)).encode()
    if form == "mangle":
        at = draw(st.integers(min_value=0, max_value=len(body)))
        junk = draw(st.binary(min_size=1, max_size=8))
        return draw(st.sampled_from([body[:at], body[:at] + junk + body[at:]]))
    if form == "nest":
        levels = draw(st.integers(min_value=1, max_value=50_000))
        return b"[" * levels + body + b"]" * levels
    return body


# Header values h11 lets a client send: visible ASCII and Latin-1, inner spaces and tabs.
_HEADER_VALUES = st.binary(min_size=1, max_size=300).map(
    lambda b: bytes(c for c in b if c == 9 or 32 <= c != 127).strip(b" \t") or b"x"
)
_HEADER_NAMES = st.sampled_from([name.lower() for name in BASE_HEADERS] + ["content-length"])
_SPECIAL_VALUES: dict[str, st.SearchStrategy[bytes]] = {
    "content-type": st.sampled_from(
        [
            b"application/json",
            b"Application/JSON; charset=UTF-8",
            b'application/json; charset="utf-8"',
            b"application/json; charset=latin-1",
            b"text/plain",
            b"application/x-www-form-urlencoded",
            b"application/jsonx",
        ]
    ),
    "x-gitlab-event": st.sampled_from(
        [name.encode() for name in HANDLED_EVENTS]
        + [b"release hook", b"Tag Push Hook", b"System Hook", b"Release  Hook", b"push hook"]
    ),
    "x-gitlab-token": st.sampled_from([TOKEN.encode(), b"wrong", TOKEN.encode() + b"x"]),
}


@st.composite
def header_lists(draw: st.DrawFn, kind: Kind) -> list[tuple[bytes, bytes]]:
    """GitLab's headers for the kind with a fresh delivery key, then dropped, changed or
    repeated."""
    fresh = {b"idempotency-key": str(uuid.uuid4()).encode(), b"x-gitlab-event": kind.event.encode()}
    headers = [
        (name, fresh.get(name, value.encode()))
        for name, value in ((k.lower().encode(), v) for k, v in BASE_HEADERS.items())
    ]
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        name = draw(_HEADER_NAMES)
        value = draw(_SPECIAL_VALUES.get(name, _HEADER_VALUES))
        if name == "content-length":
            continue  # httpx sets it from the body; lies are sent raw below
        action = draw(st.sampled_from(["replace", "drop", "repeat"]))
        if action != "repeat":
            headers = [(k, v) for k, v in headers if k != name.encode()]
        if action != "drop":
            headers.append((name.encode(), value))
    return headers


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A body and headers of one handled kind."""
    kind = draw(st.sampled_from(KINDS))
    return draw(bodies(kind)), draw(header_lists(kind))


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    """A whole HTTP/1.1 request as bytes, with framing a library would not send."""
    body = json.dumps(PAYLOAD).encode()
    lines = [b"POST /hooks/gitlab HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [f"{k}: {v}".encode() for k, v in BASE_HEADERS.items() if k != "Idempotency-Key"]
    lines.append(f"Idempotency-Key: raw-{uuid.uuid4()}".encode())
    framing = draw(st.sampled_from(["length", "lie", "twice", "chunked", "bad-chunks", "none"]))
    if framing == "length":
        lines.append(b"Content-Length: %d" % len(body))
    elif framing == "lie":
        delta = draw(st.integers(min_value=-20, max_value=20))
        lines.append(b"Content-Length: %d" % max(0, len(body) + delta))
    elif framing == "twice":
        lines += [b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 1)]
    elif framing in ("chunked", "bad-chunks"):
        lines.append(b"Transfer-Encoding: chunked")
        size = b"%x" % len(body) if framing == "chunked" else draw(st.sampled_from([b"zz", b"-1"]))
        body = size + b"\r\n" + body + b"\r\n0\r\n\r\n"
    oddity = draw(
        st.sampled_from(
            [
                None,
                b"No-Colon-Here",
                b" folded continuation",
                b"X-Big: " + b"a" * 20_000,
                b"Content-Type: text/plain",
                b"X-Gitlab-Event: Tag Push Hook",
                b"Bad\x01Name: x",
            ]
        )
    )
    if oddity is not None:
        lines.insert(draw(st.integers(min_value=1, max_value=len(lines))), oddity)
    first = draw(
        st.sampled_from(
            [
                lines[0],
                b"GET /hooks/gitlab HTTP/1.1",
                b"POST /hooks/gitlab HTTP/1.0",
                b"POST /%2e%2e/hooks HTTP/1.1",
                b"POST /hooks/gitlab HTTP/9.9",
                b"\x16\x03\x01\x02\x00",  # a TLS hello
            ]
        )
    )
    return b"\r\n".join([first, *lines[1:]]) + b"\r\n\r\n" + body


# --- the receiver and what is checked -------------------------------------------------------------


@dataclass
class FuzzTarget:
    """A receiver on loopback, the outbox it writes, and figures over every request sent."""

    url: str
    port: int
    db_path: Path
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)
    accepted_events: Counter[str] = field(default_factory=Counter)
    deliverable: int = 0
    largest_parameters: int = 0

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=ANSWER_BOUND)

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def _answered(self, status: int, seconds: float) -> None:
        self.statuses[status] += 1
        self.latencies.append(seconds)
        assert status < 500, f"{status} from the receiver"
        assert seconds < ANSWER_BOUND, f"answered after {seconds:.1f} s"

    def post(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        started = time.monotonic()
        try:
            response = self.http.post(HOOK_PATH, content=body, headers=headers)
        except httpx.TimeoutException:
            raise AssertionError(f"no answer within {ANSWER_BOUND} s (a hang)") from None
        except httpx.TransportError:
            # Refusing a body over the limit before reading it closes the connection while
            # the client is still sending; the client may see that instead of the 413.
            # (The smallest limit, a release hook's: the kind header may have been changed.)
            if len(body) > MAX_BODY_BYTES:
                self._answered(413, time.monotonic() - started)
                return
            raise
        self._answered(response.status_code, time.monotonic() - started)
        assert response.headers["content-type"] == "application/json"
        answer = response.json()
        if response.status_code >= 400:
            assert isinstance(answer["error"], str) and answer["error"], answer
        if response.status_code == 202:
            self.check_deliverable(answer["event_id"])

    def check_deliverable(self, event_id: str) -> None:
        """The stored event's payload is the parameter of the run it starts."""
        with sqlite3.connect(self.db_path) as db:
            (event_json,) = db.execute(
                "SELECT event_json FROM outbox WHERE event_id = ?", (event_id,)
            ).fetchone()
        event = json.loads(event_json)
        name = event["event"]
        if name.startswith("gitlab.release."):
            # As the deployment trigger renders it: a run Prefect starts.
            parameters = run_parameters(event)
            Release.model_validate(parameters["release"])
        elif name.startswith("gitlab.merge_request."):
            change = MergeRequestChange.model_validate(event["payload"])
            assert name == f"gitlab.merge_request.{change.action}", name
            assert change.project.path_with_namespace.lower() in _LAUNCHES_LOWER
            resource = f"gitlab.merge_request.{change.project.id}.{change.iid}"
            assert event["resource"]["prefect.resource.id"] == resource
            parameters = {"change": event["payload"]}
        else:
            assert name == "gitlab.push", name
            push = Push.model_validate(event["payload"])
            assert push.branch == push.project.default_branch and push.after != NO_COMMIT
            assert push.project.path_with_namespace.lower() in _LAUNCHES_LOWER
            resource = f"gitlab.push.{push.project.id}.{push.branch}"
            assert event["resource"]["prefect.resource.id"] == resource
            parameters = {"push": event["payload"]}
        size = len(json.dumps(parameters).encode())
        assert size < PARAMETERS_BOUND, size
        self.largest_parameters = max(self.largest_parameters, size)
        self.accepted.add(event_id)
        self.accepted_events[name.split(".")[1]] += 1
        self.deliverable += 1

    def raw(self, request: bytes) -> None:
        """Send raw bytes; each answer must be a JSON 4xx or 2xx, and come in time."""
        started = time.monotonic()
        chunks: list[bytes] = []
        with socket.create_connection(("127.0.0.1", self.port), timeout=ANSWER_BOUND) as sock:
            # Refused halfway (a head over 16 KiB) is fine: the answer is still read.
            with contextlib.suppress(OSError):
                sock.sendall(request)
            while True:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    raise AssertionError(f"connection held for {ANSWER_BOUND} s") from None
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        answer = b"".join(chunks)
        head, _, body = answer.partition(b"\r\n\r\n")
        if not answer:  # closed without a word: only for what is not HTTP at all
            assert not request.startswith(b"POST /hooks/gitlab HTTP/1.1\r\n"), request[:200]
            self._answered(0, time.monotonic() - started)
            return
        status = int(head.split(b" ", 2)[1])
        self._answered(status, time.monotonic() - started)
        assert b"content-type: application/json" in head.lower(), head
        if status == 202:
            self.check_deliverable(json.loads(body)["event_id"])

    def figures(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "statuses": dict(sorted(self.statuses.items())),
            "5xx": sum(n for status, n in self.statuses.items() if status >= 500),
            "max_latency_s": round(max(self.latencies, default=0.0), 3),
            "accepted": len(self.accepted),
            "accepted_by_kind": dict(sorted(self.accepted_events.items())),
            "deliverable": self.deliverable,
            "largest_parameters_bytes": self.largest_parameters,
        }


def target_post(target: FuzzTarget) -> Any:
    def posted(delivery: tuple[bytes, list[tuple[bytes, bytes]]]) -> None:
        target.post(*delivery)

    return posted


def _delivery(event: str, payload: dict[str, Any]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    headers = {**BASE_HEADERS, "X-Gitlab-Event": event, "Idempotency-Key": str(uuid.uuid4())}
    return json.dumps(payload).encode(), [
        (k.lower().encode(), v.encode()) for k, v in headers.items()
    ]


def _examples() -> list[tuple[bytes, list[tuple[bytes, bytes]]]]:
    def mr(**attributes: Any) -> dict[str, Any]:
        payload = copy.deepcopy(MERGE_REQUEST)
        payload["object_attributes"].update(attributes)
        return payload

    return [
        _delivery(MERGE_REQUEST_HOOK, mr(description="d" * 3_000_000)),
        _delivery(
            MERGE_REQUEST_HOOK,
            mr(action="update", oldrev="95790bf891e76fee5e1747ab589903a6a1f80f22"),
        ),
        _delivery(MERGE_REQUEST_HOOK, mr(description="d" * (MAX_REPO_BODY_BYTES + 1))),
        _delivery(PUSH_HOOK, {**PUSH, "commits": _commits(60)}),
        _delivery(PUSH_HOOK, {**PUSH, "commits": _commits(120)}),
        _delivery(RELEASE_HOOK, {**PAYLOAD, "description": "x" * 1_500_000}),
    ]


def fuzz(target: FuzzTarget, profile: str) -> None:
    """Run both generators against ``target`` under a settings profile."""

    posted = given(delivery=deliveries())(target_post(target))
    # Every run also sends what random draws reach rarely: bodies over a release hook's limit
    # that a merge request or push may have, one over theirs, and the update that is previewed.
    for delivery in _examples():
        posted = example(delivery=delivery)(posted)
    posted = settings(settings.get_profile(profile))(posted)

    @settings(settings.get_profile(profile), max_examples=RAW_EXAMPLES[profile])
    @given(request=raw_requests())
    def framing(request: bytes) -> None:
        target.raw(request)

    posted()
    framing()


@contextlib.contextmanager
def fuzz_target(state: Path) -> Iterator[tuple[FuzzTarget, PrefectEventsStandIn]]:
    """A receiver served as ``tminus webhook`` serves it (deadlines of ``DEADLINE`` s) in
    front of a stand-in for Prefect's events API that checks events with Prefect's schema."""
    stand_in = PrefectEventsStandIn()
    with ThreadedServer(stand_in.app) as events:
        config = make_config(
            state / "outbox.sqlite3",
            f"{events.url}/api",
            header_timeout=DEADLINE,
            body_timeout=DEADLINE,
            keep_alive_timeout=1,
            launches_projects=LAUNCHES,
        )
        with LifespanServer(config) as server:
            target = FuzzTarget(server.url, server.port, config.db_path)
            try:
                yield target, stand_in
            finally:
                target.http.close()


def all_sent(target: FuzzTarget, stand_in: PrefectEventsStandIn) -> bool:
    """Every accepted delivery reached the events API, which refused none."""
    return target.accepted <= {e["id"] for e in stand_in.received()}


def test_the_receiver_survives_fuzzing(tmp_path: Path) -> None:
    with fuzz_target(tmp_path) as (target, stand_in):
        fuzz(target, profile_name())
        figures = target.figures()
        assert figures["5xx"] == 0
        assert figures["deliverable"] == figures["accepted"] > 0, figures
        # Every kind had deliveries accepted, so each went through the invariants above.
        assert set(figures["accepted_by_kind"]) == {"release", "merge_request", "push"}, figures
        wait_until(lambda: all_sent(target, stand_in), timeout=30)
        health = target.http.get("/healthz").json()
        assert health["rejected"] == 0 and health["pending"] == 0, health
    print(figures)
