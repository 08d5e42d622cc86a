"""The GitLab adapter through python-gitlab against the stand-in, over real HTTP.

Also checks the stand-in behaves like GitLab where python-gitlab depends on it.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from urllib.parse import parse_qsl

import gitlab
import pytest

from tminus.domain.issues import IssueWrite, compose_description
from tminus.errors import PermanentError, TransientError
from tminus.integrations.gitlab import GitLabTracker, build_tracker, gitlab_client
from tminus.integrations.retry import RetryPolicy
from tminus.settings import Settings, load_settings
from tminus_sandbox.app import ThreadedServer, create_sandbox, free_port

from .conftest import SandboxClient

PROJECT = "marketing/launches"


def no_sleep(seconds: float) -> None:
    pass


def write(key: str, title: str = "T", **kw) -> IssueWrite:
    return IssueWrite(
        title=title, description=compose_description("body", key), due_date=date(2027, 1, 1), **kw
    )


def test_encoded_project_path_and_numeric_id(sandbox: SandboxClient) -> None:
    gl = sandbox.gitlab()
    by_path = gl.projects.get("marketing/launches")
    by_id = gl.projects.get(by_path.id)
    assert by_id.path_with_namespace == "marketing/launches"
    paths = [r["path"] for r in sandbox.requests()]
    assert "/api/v4/projects/marketing%2Flaunches" in paths


def test_create_find_update(sandbox: SandboxClient, settings: Settings) -> None:
    tracker = build_tracker(settings)
    created = tracker.create_issue(PROJECT, write("demo/activity/a"), ("launch::demo", "x"))
    assert created.iid == 1 and created.key == "demo/activity/a"
    assert created.web_url.endswith("/marketing/launches/-/issues/1")
    found = tracker.find_issues(PROJECT, "launch::demo", "tminus:key=demo/")
    assert [s.key for s in found] == ["demo/activity/a"]
    assert found[0].labels == ("launch::demo", "x")
    assert found[0].due_date == date(2027, 1, 1)
    updated = tracker.update_issue(
        PROJECT, 1, IssueWrite(title="New", add_labels=("launch-tier::L2",), remove_labels=("x",))
    )
    assert updated.title == "New"
    assert updated.labels == ("launch::demo", "launch-tier::L2")


def test_find_uses_label_and_marker(sandbox: SandboxClient, settings: Settings) -> None:
    tracker = build_tracker(settings)
    tracker.create_issue(PROJECT, write("demo/activity/a"), ())  # no label: found by marker
    tracker.create_issue(PROJECT, write("demo/activity/b"), ("launch::demo",))
    tracker.create_issue(PROJECT, write("other/activity/a"), ())  # another launch
    tracker.create_issue(PROJECT, write("demo-two/activity/a"), ())  # a slug with our prefix
    gl = sandbox.gitlab()
    gl.projects.get(PROJECT).issues.create({"title": "unrelated", "labels": ["launch::demo"]})
    keys = [s.key for s in tracker.find_issues(PROJECT, "launch::demo", "tminus:key=demo/")]
    assert keys == ["demo/activity/a", "demo/activity/b"]


def test_pagination_follows_link_headers(sandbox: SandboxClient, settings: Settings) -> None:
    tracker = build_tracker(settings)
    for i in range(130):
        tracker.create_issue(PROJECT, write(f"big/activity/a{i}"), ("launch::big",))
    sandbox.clear_log()
    found = tracker.find_issues(PROJECT, "launch::big", "tminus:key=big/")
    assert len(found) == 130
    pages = [r for r in sandbox.requests() if r["path"].endswith("/issues")]
    assert len(pages) == 4  # 2 pages by label, 2 by search
    resp = sandbox.http.get("/api/v4/projects/1/issues?per_page=50&page=2")
    assert resp.headers["X-Total"] == "130" and resp.headers["X-Total-Pages"] == "3"
    assert resp.headers["X-Next-Page"] == "3" and 'rel="next"' in resp.headers["Link"]


def test_issues_are_read_a_page_at_a_time_each_page_under_the_retry_policy(
    sandbox: SandboxClient,
) -> None:
    """``iter_issues`` fetches a page only when the one before is consumed; a page that fails
    is fetched again by the retry policy, not by python-gitlab, and the pages before it are
    not."""
    waits: list[float] = []

    def heal(seconds: float) -> None:  # the retry policy's wait: GitLab recovers meanwhile
        waits.append(seconds)
        sandbox.faults()

    tracker = GitLabTracker(gitlab_client(sandbox.url, "t"), retry=RetryPolicy(sleep=heal))
    for i in range(130):
        tracker.create_issue(PROJECT, write(f"big/activity/a{i:03d}"), ("launch::big",))
    tracker.create_issue(PROJECT, write("other/activity/a"), ("launch::other",))
    sandbox.clear_log()

    def pages() -> list[tuple[str, int]]:
        listed = [r for r in sandbox.requests() if r["path"].endswith("/issues")]
        return [(dict(parse_qsl(r["query"]))["page"], r["status"]) for r in listed]

    issues = tracker.iter_issues(PROJECT, ["launch::big"])
    first = [next(issues) for _ in range(100)]
    assert pages() == [("1", 200)]  # the first page only, while it is being consumed
    sandbox.faults(error_rate=1.0, methods=["GET"])
    rest = list(issues)
    assert pages() == [("1", 200), ("2", 502), ("2", 200)]
    assert len(waits) == 1
    keys = [s.key for s in first + rest]
    assert keys == [f"big/activity/a{i:03d}" for i in range(130)]
    query = dict(parse_qsl(sandbox.requests()[0]["query"]))
    assert query["per_page"] == "100" and query["labels"] == "launch::big"
    tracker.close()


def test_labels_are_created_once(sandbox: SandboxClient, settings: Settings) -> None:
    tracker = build_tracker(settings)
    assert tracker.ensure_labels(PROJECT, ["a", "launch-tier::L1"]) == ["a", "launch-tier::L1"]
    assert tracker.ensure_labels(PROJECT, ["a", "launch-tier::L1", "b"]) == ["b"]
    colors = {lbl.name: lbl.color for lbl in sandbox.gitlab().projects.get(PROJECT).labels.list()}
    assert colors["launch-tier::L1"] == "#dc143c"


def test_links_and_notes(sandbox: SandboxClient, settings: Settings) -> None:
    tracker = build_tracker(settings)
    for key in ("d/tracking", "d/activity/a", "d/activity/b"):
        tracker.create_issue(PROJECT, write(key), ())
    tracker.link_issues(PROJECT, 1, 2)
    tracker.link_issues(PROJECT, 1, 2)  # already linked: GitLab's 409 is success
    tracker.link_issues(PROJECT, 1, 3)
    assert tracker.linked_iids(PROJECT, 1) == {2, 3}
    assert tracker.linked_iids(PROJECT, 2) == {1}
    tracker.add_note(PROJECT, 2, "hello")
    notes = sandbox.gitlab().projects.get(PROJECT).issues.get(2).notes.list()
    assert [n.body for n in notes] == ["hello"]


def test_users(sandbox: SandboxClient, settings: Settings) -> None:
    tracker = build_tracker(settings)
    uid = tracker.user_id("ada")
    assert isinstance(uid, int)
    assert tracker.user_id("ADA") == uid


def test_permanent_errors_carry_gitlabs_message(tmp_path: Path) -> None:
    app = create_sandbox(tmp_path, gitlab_token="right", auto_create=False).app
    with ThreadedServer(app) as server:
        env = {"TMINUS_GITLAB_URL": server.url, "TMINUS_GITLAB_TOKEN": "wrong"}
        with pytest.raises(PermanentError) as err:
            build_tracker(load_settings(env)).check_project(PROJECT)
        assert err.value.status == 401
        assert "401 Unauthorized" in str(err.value) and "TMINUS_GITLAB_TOKEN" in str(err.value)
        assert "wrong" not in str(err.value)  # the token never shows
        tracker = build_tracker(load_settings({**env, "TMINUS_GITLAB_TOKEN": "right"}))
        with pytest.raises(PermanentError) as err:
            tracker.check_project(PROJECT)
        assert err.value.status == 404 and "404 Project Not Found" in str(err.value)
        assert tracker.user_id("nobody") is None


def test_bad_data_is_permanent(sandbox: SandboxClient, settings: Settings) -> None:
    tracker = build_tracker(settings)
    with pytest.raises(PermanentError) as err:
        tracker.create_issue(PROJECT, IssueWrite(title="x" * 300, description="d"), ())
    assert err.value.status == 400 and "title is too long" in str(err.value)


def test_transient_failures_are_retried_by_the_client(
    sandbox: SandboxClient, settings: Settings
) -> None:
    tracker = build_tracker(settings)
    tracker.create_issue(PROJECT, write("r/activity/a"), ("launch::r",))
    sandbox.faults(error_rate=0.3, rate_limit_rate=0.2, retry_after=0, seed=7)
    for _ in range(10):
        assert len(tracker.find_issues(PROJECT, "launch::r", "tminus:key=r/")) == 1
    statuses = {r["status"] for r in sandbox.requests()}
    assert {429, 502} <= statuses


def test_a_lost_create_is_found_not_repeated(sandbox: SandboxClient, settings: Settings) -> None:
    """A 5xx on create may hide a create that happened: look it up before trying again."""
    tracker = build_tracker(settings)
    sandbox.faults(
        after_write_error_rate=1.0, prefix="/api/v4/projects/marketing%2Flaunches/issues"
    )
    state = tracker.create_issue(PROJECT, write("w/activity/a"), ("launch::w",))
    assert state.key == "w/activity/a"
    sandbox.faults()
    assert len(tracker.find_issues(PROJECT, "launch::w", "tminus:key=w/")) == 1
    posts = [r for r in sandbox.requests() if r["method"] == "POST"]
    assert [r["fault"] for r in posts] == ["after-write"]


def test_create_gives_up_as_transient(sandbox: SandboxClient) -> None:
    tracker = GitLabTracker(gitlab_client(sandbox.url, "t"), retry=RetryPolicy(sleep=no_sleep))
    tracker.check_project(PROJECT)
    sandbox.faults(error_rate=1.0, methods=["POST"])
    with pytest.raises(TransientError, match="502"):
        tracker.create_issue(PROJECT, write("w/activity/a"), ("launch::w",))


def test_connection_refused_is_transient() -> None:

    tracker = GitLabTracker(
        gitlab_client(f"http://127.0.0.1:{free_port()}", "t", timeout=1),
        retry=RetryPolicy(sleep=no_sleep),
    )
    with pytest.raises(TransientError, match="cannot reach GitLab"):
        tracker.check_project(PROJECT)


def test_stand_in_state_survives_restart(tmp_path: Path) -> None:
    for round_ in range(2):
        with ThreadedServer(create_sandbox(tmp_path).app) as server:
            gl = gitlab.Gitlab(server.url, private_token="t")
            project = gl.projects.get(PROJECT)
            if round_ == 0:
                project.issues.create({"title": "kept"})
            else:
                assert [i.title for i in project.issues.list(get_all=True)] == ["kept"]


def test_stand_in_error_bodies(sandbox: SandboxClient) -> None:
    http = sandbox.http
    assert http.get("/api/v4/projects/marketing%2Flaunches").json()["id"] == 1
    assert http.post("/api/v4/projects/1/issues", json={}).json() == {"error": "title is missing"}
    assert http.get("/api/v4/projects/1/issues/99").status_code == 404
    r = http.post("/api/v4/projects/1/labels", json={"name": "a", "color": "#fff"})
    assert r.status_code == 201
    r = http.post("/api/v4/projects/1/labels", json={"name": "a", "color": "#fff"})
    assert (r.status_code, r.json()) == (409, {"message": "Label already exists"})
    sandbox.faults(rate_limit_rate=1.0, retry_after=3)
    r = http.get("/api/v4/projects/1")
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert http.get("/_sandbox/faults").status_code == 200  # control is never faulted


def test_issue_links_open_a_page(sandbox: SandboxClient, settings: Settings) -> None:
    tracker = build_tracker(settings)
    state = tracker.create_issue(PROJECT, write("p/activity/a", title="<b>Blog</b>"), ("x",))
    tracker.add_note(PROJECT, state.iid, "a comment")
    page = sandbox.http.get(state.web_url)
    assert page.status_code == 200
    assert "&lt;b&gt;Blog&lt;/b&gt;" in page.text and "a comment" in page.text
    listing = sandbox.http.get(f"{sandbox.url}/{PROJECT}/-/issues")
    assert "#1" in listing.text
    assert sandbox.http.get(f"{sandbox.url}/{PROJECT}/-/issues/99").status_code == 404


def test_latency_applies_only_where_faults_are_aimed(sandbox: SandboxClient) -> None:
    import time

    sandbox.faults(latency_ms=300, prefix="/api/v4/projects")
    started = time.perf_counter()
    sandbox.http.get("/api/v4/users")
    assert time.perf_counter() - started < 0.25
    started = time.perf_counter()
    sandbox.http.get("/api/v4/projects/marketing%2Flaunches")
    assert time.perf_counter() - started >= 0.3


def test_only_a_connection_that_never_opened_counts_as_not_sent() -> None:
    """A reset, a TLS error or a read timeout may follow a create GitLab carried out: such a
    create is looked up before it is sent again, never re-sent blindly."""
    import requests

    from tminus.integrations.gitlab import translate

    def raised(exc: Exception) -> TransientError:
        with pytest.raises(TransientError) as info, translate("new issue"):
            raise exc
        return info.value

    try:
        requests.get(f"http://127.0.0.1:{free_port()}/", timeout=2)
    except requests.ConnectionError as refused:
        assert raised(refused).sent is False
    for lost in (
        requests.exceptions.SSLError("EOF occurred in violation of protocol"),
        requests.exceptions.ChunkedEncodingError("Connection broken"),
        requests.ReadTimeout("read timed out"),
        requests.ConnectionError("('Connection aborted.', RemoteDisconnected())"),
    ):
        error = raised(lost)
        assert error.sent is True and "cannot reach GitLab" in error.message


def test_stand_in_link_types_read_as_gitlab_answers_them(sandbox: SandboxClient) -> None:
    """``A is_blocked_by B`` is B blocking A: each end lists the other with its own view."""
    project = sandbox.gitlab().projects.get("marketing/launches")
    a, b = (project.issues.create({"title": t}) for t in "AB")
    a.links.create(
        {"target_project_id": project.id, "target_issue_iid": b.iid, "link_type": "is_blocked_by"}
    )
    assert [(link.iid, link.link_type) for link in a.links.list()] == [(b.iid, "is_blocked_by")]
    assert [(link.iid, link.link_type) for link in b.links.list()] == [(a.iid, "blocks")]
    sandbox.sandbox.gitlab.blocked_issues = False  # GitLab Free
    c = project.issues.create({"title": "C"})
    with pytest.raises(gitlab.exceptions.GitlabCreateError) as info:
        c.links.create(
            {"target_project_id": project.id, "target_issue_iid": a.iid, "link_type": "blocks"}
        )
    assert info.value.response_code == 403
    assert "not available for current license" in str(info.value)
