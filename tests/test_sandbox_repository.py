"""The GitLab stand-in's repositories, merge requests, statuses and hooks, through python-gitlab
over HTTP (as the launches-as-code code will use them), and its hook deliveries received by a
small HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import gitlab
import pytest
from gitlab.v4.objects import Project

from .conftest import SandboxClient

PROJECT = "marketing/launches-repo"
ZEROS = "0" * 40


@pytest.fixture
def project(sandbox: SandboxClient) -> Project:
    return sandbox.gitlab().projects.get(PROJECT)


def commit(project: Project, branch: str, *actions: dict[str, Any], **kw: Any) -> Any:
    return project.commits.create(
        {"branch": branch, "commit_message": f"change {branch}", "actions": list(actions), **kw}
    )


def create(path: str, content: str) -> dict[str, Any]:
    return {"action": "create", "file_path": path, "content": content}


def update(path: str, content: str) -> dict[str, Any]:
    return {"action": "update", "file_path": path, "content": content}


class Receiver:
    """An HTTP server on 127.0.0.1 that records what it is sent and answers 200."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                received.append((dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"received")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/gitlab"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def events(self) -> list[str]:
        return [headers["X-Gitlab-Event"] for headers, _ in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()
    r.thread.join(timeout=5)


# --- repository ------------------------------------------------------------------------------


def test_empty_project_then_first_commit_creates_the_branch(project: Project) -> None:
    assert project.default_branch == "main"
    assert project.branches.list(get_all=True) == []
    created = commit(
        project,
        "main",
        create("launches/a.yaml", "name: a\n"),
        {
            "action": "create",
            "file_path": "launches/b.yaml",
            "content": base64.b64encode(b"name: b\n").decode(),
            "encoding": "base64",
        },
        create("README.md", "hello\n"),
        author_name="Ada",
        author_email="ada@example.com",
    )
    assert len(created.id) == 40 and created.parent_ids == []
    assert created.author_name == "Ada" and created.title == "change main"
    branch = project.branches.get("main")
    assert branch.commit["id"] == created.id
    assert project.files.raw(file_path="launches/b.yaml", ref="main") == b"name: b\n"
    second = commit(project, "main", update("launches/a.yaml", "name: a2\n"))
    assert second.parent_ids == [created.id]
    assert project.commits.get(second.id).parent_ids == [created.id]
    # Files by branch and by commit id, JSON and raw.
    assert project.files.raw(file_path="launches/a.yaml", ref=created.id) == b"name: a\n"
    assert project.files.raw(file_path="launches/a.yaml", ref="main") == b"name: a2\n"
    f = project.files.get(file_path="launches/a.yaml", ref="main")
    assert f.decode() == b"name: a2\n"
    assert (f.file_name, f.file_path, f.size, f.encoding) == (
        "a.yaml",
        "launches/a.yaml",
        9,
        "base64",
    )
    assert f.commit_id == second.id and f.last_commit_id == second.id and len(f.blob_id) == 40
    untouched = project.files.get(file_path="launches/b.yaml", ref="main")
    assert untouched.last_commit_id == created.id
    with pytest.raises(gitlab.GitlabGetError) as missing:
        project.files.raw(file_path="launches/zzz.yaml", ref="main")
    assert missing.value.response_code == 404
    assert missing.value.error_message == "404 File Not Found"


def test_commit_actions_refused_like_gitlab(project: Project) -> None:
    commit(project, "main", create("a.txt", "a"))
    cases = [
        create("a.txt", "again"),
        update("nope.txt", "x"),
        {"action": "delete", "file_path": "nope.txt"},
        {"action": "move", "file_path": "b.txt", "previous_path": "nope.txt"},
    ]
    for action in cases:
        with pytest.raises(gitlab.GitlabCreateError) as refused:
            commit(project, "main", action)
        assert refused.value.response_code == 400
        assert "A file with this name" in str(refused.value.error_message)
    assert len(project.commits.list(ref_name="main", get_all=True)) == 1


def test_branches_and_tree(project: Project) -> None:
    first = commit(
        project,
        "main",
        create("launches/a.yaml", "a"),
        create("launches/b.yaml", "b"),
        create("launches/old/c.yaml", "c"),
        create("playbook.yaml", "p"),
    )
    branch = project.branches.create({"branch": "feature/x", "ref": "main"})
    assert branch.name == "feature/x" and branch.commit["id"] == first.id
    assert project.branches.get("feature/x").commit["id"] == first.id
    with pytest.raises(gitlab.GitlabCreateError):
        project.branches.create({"branch": "feature/x", "ref": "main"})
    with pytest.raises(gitlab.GitlabCreateError):
        project.branches.create({"branch": "y", "ref": "no-such-ref"})
    assert [b.name for b in project.branches.list(get_all=True)] == ["feature/x", "main"]
    commit(project, "feature/x", {"action": "delete", "file_path": "launches/a.yaml"})

    root = project.repository_tree(ref="main", get_all=True)
    assert [(i["type"], i["path"]) for i in root] == [
        ("tree", "launches"),
        ("blob", "playbook.yaml"),
    ]
    launches = project.repository_tree(path="launches", ref="main", get_all=True, per_page=1)
    assert [(i["type"], i["name"], i["mode"]) for i in launches] == [
        ("tree", "old", "040000"),
        ("blob", "a.yaml", "100644"),
        ("blob", "b.yaml", "100644"),
    ]
    everything = project.repository_tree(ref="main", recursive=True, get_all=True)
    assert [i["path"] for i in everything if i["type"] == "blob"] == [
        "launches/a.yaml",
        "launches/b.yaml",
        "launches/old/c.yaml",
        "playbook.yaml",
    ]
    on_branch = project.repository_tree(path="launches", ref="feature/x", get_all=True)
    assert [i["name"] for i in on_branch] == ["old", "b.yaml"]
    with pytest.raises(gitlab.GitlabGetError):
        project.repository_tree(path="nothing-here", ref="main", get_all=True)


def test_compare_from_the_merge_base_with_renames_and_deletes(project: Project) -> None:
    base = commit(
        project,
        "main",
        create("launches/a.yaml", "name: a\ntier: L1\n"),
        create("launches/b.yaml", "name: b\n"),
        create("launches/c.yaml", "one\ntwo\nthree\nfour\n"),
        create("playbook.yaml", "p\n"),
    )
    project.branches.create({"branch": "feature", "ref": "main"})
    work = commit(
        project,
        "feature",
        {"action": "move", "previous_path": "launches/a.yaml", "file_path": "launches/a2.yaml"},
        {"action": "delete", "file_path": "launches/b.yaml"},
        {
            "action": "move",
            "previous_path": "launches/c.yaml",
            "file_path": "archive/c.yaml",
            "content": "one\ntwo\nthree\nfive\n",
        },
    )
    commit(project, "main", create("launches/d.yaml", "name: d\n"))

    result = project.repository_compare("main", "feature")
    assert [c["id"] for c in result["commits"]] == [work.id]
    assert result["commit"]["id"] == work.id
    assert result["compare_timeout"] is False and result["compare_same_ref"] is False
    diffs = {d["new_path"]: d for d in result["diffs"]}
    assert set(diffs) == {"launches/a2.yaml", "launches/b.yaml", "archive/c.yaml"}  # no d.yaml
    renamed = diffs["launches/a2.yaml"]
    assert renamed["renamed_file"] and renamed["old_path"] == "launches/a.yaml"
    assert not renamed["new_file"] and not renamed["deleted_file"] and renamed["diff"] == ""
    moved = diffs["archive/c.yaml"]
    assert moved["renamed_file"] and moved["old_path"] == "launches/c.yaml"
    assert "-four\n+five\n" in moved["diff"]
    deleted = diffs["launches/b.yaml"]
    assert deleted["deleted_file"] and deleted["b_mode"] == "0" and "-name: b" in deleted["diff"]

    # straight=true diffs the two tips: main's own d.yaml shows as deleted.
    straight = project.repository_compare("main", "feature", straight=True)
    assert any(d["new_path"] == "launches/d.yaml" and d["deleted_file"] for d in straight["diffs"])
    back = project.repository_compare("feature", "main")
    assert [d["new_path"] for d in back["diffs"]] == ["launches/d.yaml"]
    assert back["diffs"][0]["new_file"] and back["diffs"][0]["a_mode"] == "0"
    same = project.repository_compare(base.id, base.id)
    assert same["compare_same_ref"] is True and same["diffs"] == [] and same["commits"] == []


# --- merge requests --------------------------------------------------------------------------


def test_merge_request_lifecycle_with_notes_and_statuses(
    sandbox: SandboxClient, project: Project
) -> None:
    commit(project, "main", create("launches/a.yaml", "a\n"), create("README.md", "r\n"))
    project.branches.create({"branch": "launch-b", "ref": "main"})
    head = commit(project, "launch-b", create("launches/b.yaml", "b\n"))
    main_only = commit(project, "main", update("README.md", "r2\n"))

    mr = project.mergerequests.create(
        {"source_branch": "launch-b", "target_branch": "main", "title": "Add b", "description": "d"}
    )
    assert (mr.iid, mr.state, mr.sha) == (1, "opened", head.id)
    assert mr.source_project_id == mr.target_project_id == project.id
    assert mr.diff_refs["head_sha"] == head.id and mr.diff_refs["start_sha"] == main_only.id
    assert mr.diff_refs["base_sha"] == head.parent_ids[0]
    assert mr.web_url == f"{sandbox.url}/{PROJECT}/-/merge_requests/1"
    assert mr.author["username"] == "tminus-bot" and mr.merge_commit_sha is None
    with pytest.raises(gitlab.GitlabCreateError) as dup:
        project.mergerequests.create(
            {"source_branch": "launch-b", "target_branch": "main", "title": "again"}
        )
    assert dup.value.response_code == 409

    # Notes, like issue notes.
    note = mr.notes.create({"body": "plan: 1 launch"})
    assert note.noteable_type == "MergeRequest" and note.noteable_iid == 1
    assert note.system is False and note.author["username"] == "tminus-bot"
    note.body = "plan: 2 launches"
    note.save()
    assert [n.body for n in mr.notes.list(get_all=True)] == ["plan: 2 launches"]
    assert mr.notes.get(note.id).body == "plan: 2 launches"

    # Statuses: one current per (sha, name).
    statuses = project.commits.get(head.id, lazy=True).statuses
    first = statuses.create({"state": "pending", "name": "tminus/preview"})
    assert (first.status, first.sha, first.ref, first.name) == (
        "pending",
        head.id,
        "launch-b",
        "tminus/preview",
    )
    statuses.create(
        {
            "state": "success",
            "name": "tminus/preview",
            "target_url": "http://x/",
            "description": "ok",
        }
    )
    statuses.create({"state": "running"})
    current = {s.name: s.status for s in statuses.list(get_all=True)}
    assert current == {"tminus/preview": "success", "default": "running"}
    with pytest.raises(gitlab.GitlabCreateError) as bad:
        statuses.create({"state": "bogus"})
    assert bad.value.response_code == 400
    assert bad.value.error_message == "state does not have a valid value"
    with pytest.raises(gitlab.GitlabCreateError) as unknown:
        project.commits.get("f" * 40, lazy=True).statuses.create({"state": "success"})
    assert unknown.value.response_code == 404

    # Edit, close, reopen, list by state.
    mr.title = "Add launch b"
    mr.save()
    mr.state_event = "close"
    mr.save()
    assert project.mergerequests.get(1).state == "closed"
    assert [m.iid for m in project.mergerequests.list(state="opened", get_all=True)] == []
    mr.state_event = "reopen"
    mr.save()
    assert [m.iid for m in project.mergerequests.list(state="opened", get_all=True)] == [1]

    # A new commit on the source branch moves the merge request's head.
    head2 = commit(project, "launch-b", update("launches/b.yaml", "b2\n"))
    assert project.mergerequests.get(1).sha == head2.id

    mr = project.mergerequests.get(1)
    mr.merge()
    merged = project.mergerequests.get(1)
    assert merged.state == "merged" and merged.title == "Add launch b"
    merge_commit = project.commits.get(merged.merge_commit_sha)
    assert merge_commit.parent_ids == [main_only.id, head2.id]
    assert project.branches.get("main").commit["id"] == merged.merge_commit_sha
    assert project.files.raw(file_path="launches/b.yaml", ref="main") == b"b2\n"
    assert project.files.raw(file_path="README.md", ref="main") == b"r2\n"
    assert [m.iid for m in project.mergerequests.list(state="merged", get_all=True)] == [1]
    with pytest.raises(gitlab.GitlabMRClosedError):
        mr.merge()

    page = sandbox.http.get(f"/{PROJECT}/-/merge_requests/1")
    assert page.status_code == 200 and "plan: 2 launches" in page.text


def test_merge_conflict_is_refused_with_406(project: Project) -> None:
    commit(project, "main", create("launches/a.yaml", "a\n"), create("b.txt", "b\n"))
    project.branches.create({"branch": "left", "ref": "main"})
    commit(project, "left", update("launches/a.yaml", "left\n"))
    commit(project, "main", update("launches/a.yaml", "right\n"))
    mr = project.mergerequests.create(
        {"source_branch": "left", "target_branch": "main", "title": "Conflicting"}
    )
    assert mr.has_conflicts is True and mr.detailed_merge_status == "conflict"
    with pytest.raises(gitlab.GitlabMRClosedError) as refused:  # python-gitlab's 406 error
        mr.merge()
    assert refused.value.response_code == 406
    assert refused.value.error_message == "Branch cannot be merged"
    assert project.mergerequests.get(mr.iid).state == "opened"


# --- hooks -----------------------------------------------------------------------------------


def test_hook_urls_must_be_loopback(project: Project) -> None:
    for url in ("http://example.com/hook", "http://10.0.0.1/hook", "ftp://127.0.0.1/x"):
        with pytest.raises(gitlab.GitlabCreateError) as refused:
            project.hooks.create({"url": url})
        assert refused.value.response_code == 422
        assert "127.0.0.1 or" in str(refused.value.error_message)
    hook = project.hooks.create({"url": "http://localhost:9/hook"})
    assert hook.push_events is True and hook.merge_requests_events is False
    assert [h.id for h in project.hooks.list(get_all=True)] == [hook.id]
    project.hooks.delete(hook.id)
    assert project.hooks.list(get_all=True) == []


def test_push_and_merge_request_hooks_are_delivered_in_order(
    sandbox: SandboxClient, project: Project, receiver: Receiver
) -> None:
    hook = project.hooks.create(
        {"url": receiver.url, "token": "s3cret", "merge_requests_events": True}
    )
    first = commit(project, "main", create("launches/a.yaml", "a\n"))
    project.branches.create({"branch": "b", "ref": "main"})
    one = commit(project, "b", create("launches/b.yaml", "b\n"))
    mr = project.mergerequests.create({"source_branch": "b", "target_branch": "main", "title": "B"})
    two = commit(project, "b", update("launches/b.yaml", "b2\n"))
    mr.description = "now with words"
    mr.save()
    mr.merge()
    deliveries = sandbox.hook_deliveries()

    assert receiver.events() == [
        "Push Hook",  # main created by its first commit
        "Push Hook",  # branch b created
        "Push Hook",  # a commit on b
        "Merge Request Hook",  # open
        "Push Hook",  # a commit on b ...
        "Merge Request Hook",  # ... updates the merge request (oldrev)
        "Merge Request Hook",  # description edited
        "Push Hook",  # the merge commit on main
        "Merge Request Hook",  # merge
    ]
    assert [d["event"] for d in deliveries] == receiver.events()
    assert all(d["response_status"] == 200 and d["response_body"] == "received" for d in deliveries)

    headers, push = receiver.received[0]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Gitlab-Token"] == "s3cret"
    assert headers["User-Agent"] == "GitLab/18.6.0"
    assert headers["X-Gitlab-Instance"] == sandbox.url
    assert len({h["X-Gitlab-Event-UUID"] for h, _ in receiver.received}) == 9
    assert push["object_kind"] == push["event_name"] == "push"
    assert (push["before"], push["after"], push["checkout_sha"]) == (ZEROS, first.id, first.id)
    assert push["ref"] == "refs/heads/main" and push["project_id"] == project.id
    assert push["project"]["path_with_namespace"] == PROJECT
    assert push["project"]["default_branch"] == "main"
    assert push["project"]["web_url"] == f"{sandbox.url}/{PROJECT}"
    assert push["total_commits_count"] == 1
    assert push["commits"][0]["id"] == first.id
    assert push["commits"][0]["added"] == ["launches/a.yaml"]
    assert push["user_username"] == "tminus-bot" and push["message"] is None

    new_branch = receiver.received[1][1]
    assert new_branch["before"] == ZEROS and new_branch["ref"] == "refs/heads/b"
    assert new_branch["after"] == first.id and new_branch["commits"] == []
    on_b = receiver.received[2][1]
    assert (on_b["before"], on_b["after"]) == (first.id, one.id)

    opened = receiver.received[3][1]
    attrs = opened["object_attributes"]
    assert opened["object_kind"] == opened["event_type"] == "merge_request"
    assert (attrs["action"], attrs["state"], attrs["iid"]) == ("open", "opened", mr.iid)
    assert (attrs["source_branch"], attrs["target_branch"]) == ("b", "main")
    assert attrs["last_commit"]["id"] == one.id and "oldrev" not in attrs
    assert attrs["url"] == mr.web_url and attrs["created_at"].endswith(" UTC")
    assert opened["project"]["path_with_namespace"] == PROJECT
    assert opened["repository"]["name"] == "launches-repo" and opened["labels"] == []

    updated = receiver.received[5][1]["object_attributes"]
    assert (updated["action"], updated["oldrev"]) == ("update", one.id)
    assert updated["last_commit"]["id"] == two.id
    edited = receiver.received[6][1]
    assert edited["object_attributes"]["action"] == "update"
    assert "oldrev" not in edited["object_attributes"]
    assert edited["changes"]["description"] == {"previous": "", "current": "now with words"}

    merged_push = receiver.received[7][1]
    merged = project.mergerequests.get(mr.iid)
    assert (merged_push["before"], merged_push["after"]) == (first.id, merged.merge_commit_sha)
    assert [c["id"] for c in merged_push["commits"]] == [one.id, two.id, merged.merge_commit_sha]
    merge_event = receiver.received[8][1]["object_attributes"]
    assert (merge_event["action"], merge_event["state"]) == ("merge", "merged")
    assert merge_event["merge_commit_sha"] == merged.merge_commit_sha

    # A resend: the same payload and Idempotency-Key, a new Webhook-UUID, delivered now.
    original = deliveries[3]
    again = sandbox.resend_hook_delivery(original["id"])
    assert again["resend_of"] == original["id"] and again["response_status"] == 200
    assert again["hook_id"] == hook.id
    resent_headers, resent_body = receiver.received[-1]
    original_headers = receiver.received[3][0]
    assert resent_body == receiver.received[3][1]
    assert resent_headers["Idempotency-Key"] == original_headers["Idempotency-Key"]
    assert resent_headers["X-Gitlab-Event-UUID"] == original_headers["X-Gitlab-Event-UUID"]
    assert resent_headers["X-Gitlab-Webhook-UUID"] != original_headers["X-Gitlab-Webhook-UUID"]
    assert again["request_headers"]["X-Gitlab-Token"] == "[REDACTED]"
    assert len(sandbox.hook_deliveries()) == 10


def test_hook_events_are_chosen_and_reset_clears_everything(
    sandbox: SandboxClient, project: Project, receiver: Receiver
) -> None:
    project.hooks.create({"url": receiver.url, "push_events": False, "merge_requests_events": True})
    commit(project, "main", create("a", "a"))
    project.branches.create({"branch": "x", "ref": "main"})
    commit(project, "x", create("b", "b"))
    project.mergerequests.create({"source_branch": "x", "target_branch": "main", "title": "X"})
    assert [d["event"] for d in sandbox.hook_deliveries()] == ["Merge Request Hook"]
    headers = receiver.received[0][0]
    assert "X-Gitlab-Token" not in headers

    sandbox.reset()
    assert sandbox.hook_deliveries() == []
    fresh = sandbox.gitlab().projects.get(PROJECT)
    assert fresh.hooks.list(get_all=True) == []
    assert fresh.branches.list(get_all=True) == []
    assert fresh.mergerequests.list(get_all=True) == []


def test_a_failed_delivery_is_recorded(sandbox: SandboxClient, project: Project) -> None:
    receiver = Receiver()  # bound, then closed: nothing listens on its port
    url = receiver.url
    receiver.server.server_close()
    project.hooks.create({"url": url})
    commit(project, "main", create("a", "a"))
    [delivery] = sandbox.hook_deliveries()
    assert delivery["response_status"] is None and "ConnectError" in delivery["error"]
