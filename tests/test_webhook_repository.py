"""Merge Request Hooks and Push Hooks of the launches repository, over real HTTP.

The payloads are GitLab's own examples, as its webhook events documentation prints them:

- ``fixtures/gitlab_merge_request_hook.json``: "Merge request events",
  https://docs.gitlab.com/user/project/integrations/webhook_events/#merge-request-events
- ``fixtures/gitlab_push_hook.json``: "Push events",
  https://docs.gitlab.com/user/project/integrations/webhook_events/#push-events

(source: ``doc/user/project/integrations/webhook_events.md`` in GitLab's repository). Every
value in them is within the receiver's bounds; the merge request example is an ``open`` (no
``oldrev``), so updates are that example with an ``oldrev`` added.

The receiver runs as ``tminus webhook`` serves it, in front of the stand-in for Prefect's events
API from ``test_webhook`` (which checks every event with Prefect's own ``Event`` schema).
"""

from __future__ import annotations

import copy
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tminus.deployments.webhook import (
    EVENT_ID_NAMESPACE,
    HOOK_PATH,
    MAX_BODY_BYTES,
    MAX_REPO_BODY_BYTES,
)
from tminus.domain.repository import NO_COMMIT, MergeRequestChange, Push
from tminus_sandbox.app import ThreadedServer

from .test_webhook import (
    HEADERS,
    RELEASE,
    LifespanServer,
    PrefectEventsStandIn,
    Receiver,
    make_config,
    settle,
    wait_until,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MERGE_REQUEST: dict[str, Any] = json.loads(
    (FIXTURES / "gitlab_merge_request_hook.json").read_text()
)
PUSH: dict[str, Any] = json.loads((FIXTURES / "gitlab_push_hook.json").read_text())
MR_PROJECT = "gitlabhq/gitlab-test"
PUSH_PROJECT = "mike/diaspora"
LAUNCHES = frozenset({MR_PROJECT, PUSH_PROJECT})
MR_HOOK = {"X_Gitlab_Event": "Merge Request Hook"}
PUSH_HOOK = {"X_Gitlab_Event": "Push Hook"}
OLDREV = "95790bf891e76fee5e1747ab589903a6a1f80f22"


def changed(payload: dict[str, Any], path: str, value: Any = ...) -> dict[str, Any]:
    """A copy of ``payload`` with the value at the dotted ``path`` set (or removed: ``...``)."""
    copied = copy.deepcopy(payload)
    *parents, last = path.split(".")
    node = copied
    for part in parents:
        node = node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return copied


@pytest.fixture(scope="module")
def events() -> Iterator[tuple[PrefectEventsStandIn, str]]:
    stand_in = PrefectEventsStandIn()
    with ThreadedServer(stand_in.app) as server:
        yield stand_in, f"{server.url}/api"


@pytest.fixture
def start(
    events: tuple[PrefectEventsStandIn, str], tmp_path: Path
) -> Iterator[Callable[..., Receiver]]:
    """Start a receiver for the launches repositories of the fixtures (or as overridden)."""
    stand_in, api = events
    stand_in.reset()
    started: list[Receiver] = []

    def receiver(**overrides: Any) -> Receiver:
        overrides.setdefault("launches_projects", LAUNCHES)
        server = LifespanServer(make_config(tmp_path / "outbox.sqlite3", api, **overrides))
        server.__enter__()
        started.append(Receiver(server))
        return started[-1]

    yield receiver
    for one in started:
        one.http.close()
        one.server.__exit__()


def outbox_payloads(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT event_json FROM outbox ORDER BY seq").fetchall()
    return [json.loads(event_json) for (event_json,) in rows]


# --- accepted ------------------------------------------------------------------------------------


def test_documented_merge_request_hook_becomes_a_preview_event(
    events: tuple[PrefectEventsStandIn, str], start: Callable[..., Receiver], tmp_path: Path
) -> None:
    stand_in, _ = events
    receiver = start()
    response = receiver.post(MERGE_REQUEST, **MR_HOOK)
    assert response.status_code == 202, response.text
    event_id = str(uuid.uuid5(EVENT_ID_NAMESPACE, HEADERS["Idempotency-Key"]))
    assert response.json() == {"status": "accepted", "event_id": event_id}

    [stored] = outbox_payloads(tmp_path / "outbox.sqlite3")
    change = MergeRequestChange.model_validate(stored["payload"])
    assert change.head_sha == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"

    wait_until(lambda: len(stand_in.received()) == 1)
    [event] = stand_in.received()
    event.pop("occurred")
    assert event == {
        "id": event_id,
        "event": "gitlab.merge_request.open",
        "resource": {
            "prefect.resource.id": "gitlab.merge_request.1.1",
            "prefect.resource.name": "gitlabhq/gitlab-test!1",
            "gitlab.project": "gitlabhq/gitlab-test",
            "gitlab.instance": "https://gitlab.example.com",
        },
        "related": [],
        "payload": {
            "action": "open",
            "iid": 1,
            "title": "MS-Viewport",
            "source_branch": "ms-viewport",
            "target_branch": "master",
            "head_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "url": "http://example.com/diaspora/merge_requests/1",
            "project": {
                "id": 1,
                "path_with_namespace": "gitlabhq/gitlab-test",
                "web_url": "http://example.com/gitlabhq/gitlab-test",
                "default_branch": "master",
            },
            "delivery": HEADERS["Idempotency-Key"],
        },
    }
    assert MergeRequestChange.model_validate(event["payload"]) == change


def test_documented_push_hook_becomes_an_apply_event(
    events: tuple[PrefectEventsStandIn, str], start: Callable[..., Receiver], tmp_path: Path
) -> None:
    stand_in, _ = events
    receiver = start()
    response = receiver.post(PUSH, **PUSH_HOOK)
    assert response.status_code == 202, response.text

    [stored] = outbox_payloads(tmp_path / "outbox.sqlite3")
    push = Push.model_validate(stored["payload"])
    assert push.branch == "master"

    wait_until(lambda: len(stand_in.received()) == 1)
    [event] = stand_in.received()
    event.pop("occurred")
    assert event == {
        "id": response.json()["event_id"],
        "event": "gitlab.push",
        "resource": {
            "prefect.resource.id": "gitlab.push.15.master",
            "prefect.resource.name": "mike/diaspora master",
            "gitlab.project": "mike/diaspora",
            "gitlab.instance": "https://gitlab.example.com",
        },
        "related": [],
        "payload": {
            "ref": "refs/heads/master",
            "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
            "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "project": {
                "id": 15,
                "path_with_namespace": "mike/diaspora",
                "web_url": "http://example.com/mike/diaspora",
                "default_branch": "master",
            },
            "delivery": HEADERS["Idempotency-Key"],
        },
    }
    assert Push.model_validate(event["payload"]) == push


@pytest.mark.parametrize("action", ["reopen", "update"])
def test_reopen_and_update_with_new_commits_get_a_preview(
    events: tuple[PrefectEventsStandIn, str], start: Callable[..., Receiver], action: str
) -> None:
    stand_in, _ = events
    receiver = start()
    payload = changed(MERGE_REQUEST, "object_attributes.action", action)
    payload["object_attributes"]["oldrev"] = OLDREV
    assert receiver.post(payload, **MR_HOOK).status_code == 202
    wait_until(lambda: len(stand_in.received()) == 1)
    [event] = stand_in.received()
    assert event["event"] == f"gitlab.merge_request.{action}"
    assert MergeRequestChange.model_validate(event["payload"]).action == action


def test_a_new_branch_pushed_to_the_default_branch_is_applied(
    start: Callable[..., Receiver], tmp_path: Path
) -> None:
    """``before`` is all zeros when the push creates the branch: still a push to apply."""
    receiver = start()
    assert receiver.post(changed(PUSH, "before", NO_COMMIT), **PUSH_HOOK).status_code == 202
    [stored] = outbox_payloads(tmp_path / "outbox.sqlite3")
    assert Push.model_validate(stored["payload"]).before == NO_COMMIT


def test_the_launches_repository_matches_ignoring_case(start: Callable[..., Receiver]) -> None:
    """GitLab's paths are case-insensitive; TMINUS_LAUNCHES_REPO may be typed either way."""
    receiver = start(launches_projects=frozenset({"GitLabHQ/GitLab-Test"}))
    assert receiver.post(MERGE_REQUEST, **MR_HOOK).status_code == 202


@pytest.mark.parametrize(
    ("payload", "headers"), [(MERGE_REQUEST, MR_HOOK), (PUSH, PUSH_HOOK)], ids=["mr", "push"]
)
def test_resends_are_duplicates_by_idempotency_key(
    events: tuple[PrefectEventsStandIn, str],
    start: Callable[..., Receiver],
    payload: dict[str, Any],
    headers: dict[str, str],
) -> None:
    stand_in, _ = events
    receiver = start()
    first = receiver.post(payload, **headers)
    assert first.status_code == 202
    event_id = first.json()["event_id"]
    again = receiver.post(payload, X_Gitlab_Webhook_UUID=str(uuid.uuid4()), **headers)
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "event_id": event_id}
    # Another delivery of the same change is another event, with an id of its own.
    other = receiver.post(payload, Idempotency_Key="another-delivery", **headers)
    assert other.status_code == 202 and other.json()["event_id"] != event_id
    assert other.json()["event_id"] == str(uuid.uuid5(EVENT_ID_NAMESPACE, "another-delivery"))
    wait_until(lambda: len(stand_in.received()) == 2)
    settle()
    assert len(stand_in.received()) == 2


# --- ignored ----------------------------------------------------------------------------------


def _mr_action(action: str) -> dict[str, Any]:
    payload = changed(MERGE_REQUEST, "object_attributes.action", action)
    payload["object_attributes"]["oldrev"] = OLDREV  # even with new commits
    return payload


IGNORED = [
    *(
        pytest.param(
            _mr_action(action),
            MR_HOOK,
            {},
            f"merge request action '{action}' needs no preview; only open, reopen, update",
            id=f"mr-{action}",
        )
        for action in ("close", "merge", "approved", "unapproved", "approval", "unapproval")
    ),
    pytest.param(
        # A closed merge request may come without its last commit: ignored, not refused.
        changed(_mr_action("close"), "object_attributes.last_commit", None),
        MR_HOOK,
        {},
        "merge request action 'close' needs no preview",
        id="mr-close-without-last-commit",
    ),
    pytest.param(
        changed(MERGE_REQUEST, "object_attributes.action", "update"),
        MR_HOOK,
        {},
        "merge request update without new commits (no oldrev",
        id="mr-update-without-oldrev",
    ),
    pytest.param(
        MERGE_REQUEST,
        MR_HOOK,
        {"launches_projects": frozenset({"launches/repo"})},
        "project 'gitlabhq/gitlab-test' is not the launches repository "
        "(TMINUS_LAUNCHES_REPO is 'launches/repo')",
        id="mr-other-project",
    ),
    pytest.param(
        MERGE_REQUEST,
        MR_HOOK,
        {"launches_projects": frozenset()},
        "none is configured: set TMINUS_LAUNCHES_REPO",
        id="mr-no-launches-repo",
    ),
    pytest.param(
        changed(PUSH, "ref", "refs/heads/feature/x"),
        PUSH_HOOK,
        {},
        "push to branch 'feature/x', not the default branch 'master'",
        id="push-other-branch",
    ),
    pytest.param(
        changed(PUSH, "after", NO_COMMIT),
        PUSH_HOOK,
        {},
        "push deletes branch 'master'; there is nothing to apply",
        id="push-deletes-branch",
    ),
    pytest.param(
        changed(PUSH, "project.default_branch"),
        PUSH_HOOK,
        {},
        "the hook names no default branch of 'mike/diaspora'",
        id="push-no-default-branch",
    ),
    pytest.param(
        PUSH,
        PUSH_HOOK,
        {"launches_projects": frozenset({"launches/repo"})},
        "project 'mike/diaspora' is not the launches repository",
        id="push-other-project",
    ),
    pytest.param(
        PUSH,
        PUSH_HOOK,
        {"launches_projects": frozenset()},
        "Push Hooks are acted on only for the launches repository, and none is configured: "
        "set TMINUS_LAUNCHES_REPO to its project path",
        id="push-no-launches-repo",
    ),
]


@pytest.mark.parametrize(("payload", "headers", "config", "reason"), IGNORED)
def test_what_needs_no_run_is_ignored_politely_and_not_stored(
    events: tuple[PrefectEventsStandIn, str],
    start: Callable[..., Receiver],
    tmp_path: Path,
    payload: dict[str, Any],
    headers: dict[str, str],
    config: dict[str, Any],
    reason: str,
) -> None:
    stand_in, _ = events
    receiver = start(**config)
    response = receiver.post(payload, **headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "ignored" and reason in answer["reason"], answer
    assert outbox_payloads(tmp_path / "outbox.sqlite3") == []
    assert receiver.health()["pending"] == 0
    settle()
    assert stand_in.posts == 0


@pytest.mark.parametrize("launches", [frozenset(), frozenset({"launches/repo"})])
def test_release_hooks_are_handled_whatever_the_launches_repository(
    start: Callable[..., Receiver], launches: frozenset[str]
) -> None:
    response = start(launches_projects=launches).post(RELEASE)
    assert response.status_code == 202, response.text


# --- refused -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "headers", "status", "problem"),
    [
        pytest.param(
            changed(MERGE_REQUEST, "object_attributes.last_commit.id", "not-a-sha"),
            MR_HOOK,
            422,
            "object_attributes.last_commit.id: got 'not-a-sha'",
            id="mr-last-commit-id",
        ),
        pytest.param(
            changed(MERGE_REQUEST, "object_attributes.last_commit"),
            MR_HOOK,
            422,
            "object_attributes.last_commit: missing",
            id="mr-no-last-commit",
        ),
        pytest.param(
            changed(MERGE_REQUEST, "object_attributes.source_branch", "../x"),
            MR_HOOK,
            422,
            "object_attributes.source_branch: got '../x'",
            id="mr-source-branch",
        ),
        pytest.param(
            changed(MERGE_REQUEST, "object_attributes.iid", 0),
            MR_HOOK,
            422,
            "object_attributes.iid: got 0",
            id="mr-iid",
        ),
        pytest.param(
            changed(MERGE_REQUEST, "object_attributes.oldrev", "abc"),
            MR_HOOK,
            422,
            "object_attributes.oldrev: got 'abc'",
            id="mr-oldrev",
        ),
        pytest.param(
            changed(MERGE_REQUEST, "object_attributes.action", 7),
            MR_HOOK,
            422,
            "object_attributes.action: got 7",
            id="mr-action-type",
        ),
        pytest.param(
            changed(MERGE_REQUEST, "project.id", 2**31),
            MR_HOOK,
            422,
            "project.id: got 2147483648",
            id="mr-project-id",
        ),
        pytest.param(
            changed(MERGE_REQUEST, "object_attributes.url", "javascript:alert(1)"),
            MR_HOOK,
            422,
            "object_attributes.url: got 'javascript:alert(1)'",
            id="mr-url",
        ),
        pytest.param(
            PUSH,
            MR_HOOK,
            400,
            "a Merge Request Hook must have object_kind 'merge_request', got 'push'",
            id="push-sent-as-mr",
        ),
        pytest.param(
            changed(PUSH, "before", "xyz"), PUSH_HOOK, 422, "before: got 'xyz'", id="before"
        ),
        pytest.param(
            changed(PUSH, "after", "DA1560886D4F094C3E6C9EF40349F7D38B5D27D7"),
            PUSH_HOOK,
            422,
            "after: got 'DA1560886D4F094C3E6C9EF40349F7D38B5D27D7'",
            id="after-uppercase",
        ),
        pytest.param(
            changed(PUSH, "ref", "refs/tags/v1.0.0"),
            PUSH_HOOK,
            422,
            "ref: got 'refs/tags/v1.0.0': is not a branch ref",
            id="ref-tag",
        ),
        pytest.param(
            changed(PUSH, "project.default_branch", "a..b"),
            PUSH_HOOK,
            422,
            "project.default_branch: got 'a..b'",
            id="default-branch",
        ),
        pytest.param(
            MERGE_REQUEST,
            PUSH_HOOK,
            400,
            "a Push Hook must have object_kind 'push', got 'merge_request'",
            id="mr-sent-as-push",
        ),
    ],
)
def test_invalid_repository_hooks_are_refused_naming_the_field(
    start: Callable[..., Receiver],
    tmp_path: Path,
    payload: dict[str, Any],
    headers: dict[str, str],
    status: int,
    problem: str,
) -> None:
    receiver = start()
    response = receiver.post(payload, **headers)
    assert response.status_code == status, response.text
    answer = response.json()
    assert any(problem in text for text in [answer["error"], *answer.get("problems", [])]), answer
    assert outbox_payloads(tmp_path / "outbox.sqlite3") == []


# --- the body's size ---------------------------------------------------------------------------


def test_repository_hooks_have_their_own_body_limit(start: Callable[..., Receiver]) -> None:
    receiver = start(max_body_bytes=4_000, max_repo_body_bytes=40_000)
    big_mr = changed(MERGE_REQUEST, "object_attributes.description", "x" * 20_000)
    assert receiver.post(big_mr, **MR_HOOK).status_code == 202
    too_big = changed(MERGE_REQUEST, "object_attributes.description", "x" * 50_000)
    response = receiver.post(too_big, Idempotency_Key="too-big", **MR_HOOK)
    assert response.status_code == 413
    assert response.json() == {"error": "body larger than 40000 bytes"}
    # A release hook keeps its own, smaller limit.
    release = dict(RELEASE, description="x" * 20_000)
    refused = receiver.post(release, Idempotency_Key="release")
    assert refused.status_code == 413
    assert refused.json() == {"error": "body larger than 4000 bytes"}


def test_default_limit_takes_a_push_of_20_commits_with_long_file_lists(
    start: Callable[..., Receiver], tmp_path: Path
) -> None:
    """GitLab lists up to 20 commits with every path each added, modified or removed: far more
    than a release hook's 2 MiB, well within the 8 MiB of merge request and push hooks."""
    receiver = start()
    commit = PUSH["commits"][0]
    paths = [f"launches/{'a-long-directory-name/' * 3}launch-{n:05}.yaml" for n in range(1_200)]
    payload = dict(
        PUSH,
        commits=[dict(commit, added=paths, modified=paths, removed=[]) for _ in range(20)],
        total_commits_count=20,
    )
    size = len(json.dumps(payload).encode())
    assert MAX_BODY_BYTES < size < MAX_REPO_BODY_BYTES
    assert receiver.post(payload, **PUSH_HOOK).status_code == 202
    [stored] = outbox_payloads(tmp_path / "outbox.sqlite3")
    assert len(json.dumps(stored)) < 4_096  # the run gets the range, not the file lists


def test_a_body_over_the_default_limit_is_refused_before_it_is_read(
    start: Callable[..., Receiver],
) -> None:
    receiver = start()
    body = json.dumps(changed(PUSH, "commits", ["x" * 1_000] * 8_500)).encode()
    assert len(body) > MAX_REPO_BODY_BYTES
    headers = HEADERS | {"X-Gitlab-Event": "Push Hook"}
    response = receiver.http.post(HOOK_PATH, content=body, headers=headers)
    assert response.status_code == 413
    assert response.json() == {"error": f"body larger than {MAX_REPO_BODY_BYTES} bytes"}


# --- from settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "launches"),
    [
        ({}, frozenset()),
        ({"TMINUS_LAUNCHES_REPO": "marketing/launches"}, frozenset({"marketing/launches"})),
    ],
)
def test_the_cli_passes_the_launches_repository_to_the_receiver(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], launches: frozenset[str]
) -> None:
    from tminus.deployments.cli import _webhook_config
    from tminus.settings import load_settings

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    config = _webhook_config(load_settings(environ))
    assert config.launches_projects == launches
