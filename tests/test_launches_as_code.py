"""Launches as code: the preview and apply-launches flows, run for real on the Prefect test
server against the stand-in GitLab (repository, merge requests, notes, statuses) over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from tminus.domain.preview import PREVIEW_MARKER, STATUS_NAME
from tminus.domain.repository import MergeRequestChange, Push
from tminus.domain.request import LaunchRequest
from tminus.flows.apply_launches import LAUNCH_DEPLOYMENT, apply_launches
from tminus.flows.launch import launch
from tminus.flows.preview import preview
from tminus.settings import Settings, load_settings, use_settings

from .conftest import SandboxClient
from .test_launch_everything import retarget

pytestmark = pytest.mark.usefixtures("prefect_server")

REPO = "marketing/launch-plans"
FILE = "launches/merge-trains.yaml"


@pytest.fixture
def repo_settings(settings_env: dict[str, str]) -> Iterator[Settings]:
    with use_settings(load_settings({**settings_env, "TMINUS_LAUNCHES_REPO": REPO})) as given:
        yield given


def launch_file(request: LaunchRequest) -> str:
    return request.model_dump_json(exclude_none=True)  # JSON is YAML


def commit(project: Any, branch: str, actions: list[dict[str, Any]], **extra: Any) -> str:
    done = project.commits.create(
        {"branch": branch, "commit_message": "edit launches", "actions": actions, **extra}
    )
    return str(done.id)


def mr_event(project: Any, mr: Any, action: str = "open") -> MergeRequestChange:
    mr = project.mergerequests.get(mr.iid)
    return MergeRequestChange.model_validate(
        {
            "action": action,
            "iid": mr.iid,
            "title": mr.title,
            "source_branch": mr.source_branch,
            "target_branch": mr.target_branch,
            "head_sha": mr.sha,
            "url": mr.web_url,
            "project": {"id": project.id, "path_with_namespace": REPO, "default_branch": "main"},
        }
    )


def previews(mr: Any) -> list[Any]:
    return [n for n in mr.notes.list(get_all=True) if PREVIEW_MARKER in n.body]


def status(project: Any, sha: str, name: str = STATUS_NAME) -> Any:
    found = [s for s in project.commits.get(sha, lazy=True).statuses.list(get_all=True)]
    mine = [s for s in found if s.name == name]
    return mine[-1] if mine else None


def outside_writes(sandbox: SandboxClient) -> list[str]:
    """Writes anywhere but merge request comments and commit statuses."""
    return [
        f"{r['method']} {r['path']}"
        for r in sandbox.writes()
        if "/merge_requests/" not in r["path"] and "/statuses/" not in r["path"]
    ]


def test_a_moved_date_is_previewed_in_one_comment_updated_on_each_push(
    sandbox: SandboxClient, repo_settings: Settings, l2: LaunchRequest
) -> None:
    gl = sandbox.gitlab()
    project = gl.projects.get(REPO)
    request = retarget(l2, sandbox.url)
    commit(
        project, "main", [{"action": "create", "file_path": FILE, "content": launch_file(request)}]
    )
    launch(request=request)  # the launch as merged earlier: issues, calendar, sales told

    moved = request.model_copy(update={"launch_date": request.launch_date + timedelta(days=7)})
    project.branches.create({"branch": "move-a-week", "ref": "main"})
    commit(
        project,
        "move-a-week",
        [{"action": "update", "file_path": FILE, "content": launch_file(moved)}],
    )
    mr = project.mergerequests.create(
        {
            "source_branch": "move-a-week",
            "target_branch": "main",
            "title": "Merge trains: a week later",
        }
    )
    sandbox.clear_log()
    out = preview(merge_request=mr_event(project, mr))
    assert out["status"] == "success" and out["comment"] == "created"
    [note] = previews(mr)
    old, new = request.launch_date.isoformat(), moved.launch_date.isoformat()
    assert f"date {old} -&gt; {new}" in note.body  # the calendar's launch day moves
    assert "due\\_date " in note.body  # ... and the activities' due dates (markdown-escaped)
    assert "would send the correction" in note.body
    assert outside_writes(sandbox) == []
    head = project.mergerequests.get(mr.iid).sha
    assert status(project, head).status == "success"

    # A second push: the same comment, updated in place, for the new head.
    later = moved.model_copy(update={"launch_date": moved.launch_date + timedelta(days=7)})
    commit(
        project,
        "move-a-week",
        [{"action": "update", "file_path": FILE, "content": launch_file(later)}],
    )
    sandbox.clear_log()
    again = preview(merge_request=mr_event(project, mr, "update"))
    assert again["comment"] == "updated"
    [updated] = previews(mr)
    assert updated.id == note.id and later.launch_date.isoformat() in updated.body
    assert status(project, again["head"]).status == "success"
    assert outside_writes(sandbox) == []
    # Unchanged head, previewed again (a resent hook): nothing written at all.
    sandbox.clear_log()
    assert preview(merge_request=mr_event(project, mr, "update"))["comment"] == "unchanged"
    assert sandbox.writes() == []


def test_an_invalid_file_fails_the_status_names_the_field_and_writes_nothing(
    sandbox: SandboxClient, repo_settings: Settings, l3: LaunchRequest
) -> None:
    gl = sandbox.gitlab()
    project = gl.projects.get(REPO)
    commit(project, "main", [{"action": "create", "file_path": "README.md", "content": "plans"}])
    project.branches.create({"branch": "bad-date", "ref": "main"})
    bad = launch_file(retarget(l3, sandbox.url)).replace(
        f'"{l3.launch_date.isoformat()}"', '"2027-02-30"'
    )
    commit(
        project,
        "bad-date",
        [{"action": "create", "file_path": "launches/bad.yaml", "content": bad}],
    )
    mr = project.mergerequests.create(
        {"source_branch": "bad-date", "target_branch": "main", "title": "A bad date"}
    )
    sandbox.clear_log()
    out = preview(merge_request=mr_event(project, mr))
    assert out["status"] == "failed"
    [note] = previews(mr)
    assert "launches/bad.yaml" in note.body and "launch\\_date" in note.body
    assert "Not valid" in note.body
    found = status(project, out["head"])
    assert found.status == "failed" and "launches/bad.yaml" in found.description
    assert outside_writes(sandbox) == []


def test_a_merge_runs_exactly_the_changed_launches_once(
    sandbox: SandboxClient,
    repo_settings: Settings,
    l2: LaunchRequest,
    l3: LaunchRequest,
    prefect_server: str,
) -> None:
    """apply-launches starts one launch run per changed file (scheduled, not executed here: the
    end-to-end test runs them) and a repeat of the same push starts none."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    gl = sandbox.gitlab()
    project = gl.projects.get(REPO)
    a, b = retarget(l2, sandbox.url), retarget(l3, sandbox.url)
    before = commit(
        project,
        "main",
        [
            {"action": "create", "file_path": "launches/a.yaml", "content": launch_file(a)},
            {"action": "create", "file_path": "launches/b.yaml", "content": launch_file(b)},
        ],
    )
    deployment_id = launch.to_deployment(name="launch").apply()
    moved = b.model_copy(update={"launch_date": b.launch_date + timedelta(days=7)})
    after = commit(
        project,
        "main",
        [{"action": "update", "file_path": "launches/b.yaml", "content": launch_file(moved)}],
    )
    push = Push.model_validate(
        {
            "ref": "refs/heads/main",
            "before": before,
            "after": after,
            "project": {"id": project.id, "path_with_namespace": REPO, "default_branch": "main"},
        }
    )
    first = apply_launches(push=push)
    assert list(first["started"]) == ["launches/b.yaml"] and not first["cancelled"]
    second = apply_launches(push=push)
    assert second["started"] == first["started"]  # the same run, found by its key

    async def runs() -> list[Any]:
        async with get_client() as client:
            return await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )

    started = asyncio.run(runs())
    assert len(started) == 1
    assert started[0].parameters["request"]["launch_date"] == moved.launch_date.isoformat()
    assert LAUNCH_DEPLOYMENT == "launch/launch"
    assert status(project, after, "tminus/apply").status == "success"


def test_a_deleted_launch_file_cancels_its_launch_and_deletes_nothing(
    sandbox: SandboxClient, repo_settings: Settings, l3: LaunchRequest
) -> None:
    gl = sandbox.gitlab()
    project = gl.projects.get(REPO)
    request = retarget(l3, sandbox.url)
    path = "launches/gone.yaml"
    before = commit(
        project, "main", [{"action": "create", "file_path": path, "content": launch_file(request)}]
    )
    launch(request=request)
    after = commit(project, "main", [{"action": "delete", "file_path": path}])
    sandbox.clear_log()
    out = apply_launches(
        push=Push.model_validate(
            {
                "ref": "refs/heads/main",
                "before": before,
                "after": after,
                "project": {"id": project.id, "path_with_namespace": REPO},
            }
        )
    )
    assert out["started"] == {} and out["cancelled"] == {path: "updated"}
    assert not [r for r in sandbox.requests() if r["method"] == "DELETE"]
    tracking = [
        i
        for i in gl.projects.get(request.project).issues.list(
            get_all=True, labels=[request.launch_label]
        )
        if i.title.startswith("Launch:")
    ]
    assert len(tracking) == 1 and "launch-status::cancelled" in tracking[0].labels


def test_a_launch_file_outside_the_launches_repository_is_refused(
    sandbox: SandboxClient, repo_settings: Settings
) -> None:
    from tminus.errors import SettingsError

    other = {"id": 99, "path_with_namespace": "someone/else", "default_branch": "main"}
    push = Push.model_validate(
        {"ref": "refs/heads/main", "before": "a" * 40, "after": "b" * 40, "project": other}
    )
    sandbox.clear_log()
    with pytest.raises(SettingsError, match="TMINUS_LAUNCHES_REPO"):
        apply_launches(push=push)
    assert sandbox.requests() == []  # refused before anything is even read


def test_tminus_preview_prints_the_comment_for_local_files(
    sandbox: SandboxClient, settings: Settings, l2: LaunchRequest, tmp_path: Any
) -> None:
    from tminus.flows.preview import preview_files

    path = tmp_path / "merge-trains.yaml"
    path.write_text(launch_file(retarget(l2, sandbox.url)))
    sandbox.clear_log()
    out = preview_files(files=[str(path)])
    text = out["markdown"]
    assert out["ok"] and text.startswith(PREVIEW_MARKER) and "### ✅" in text
    assert f"`{path}`: `merge-trains-ga`" in text and "| create |" in text
    assert sandbox.writes() == []


def test_tminus_preview_refuses_an_invalid_file_before_starting_anything(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from tminus.deployments.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("slug: x\ntier: L9\n")
    assert main(["preview", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "tier" in err and "Nothing was created or changed" in err


def test_a_comment_someone_else_wrote_with_the_marker_is_left_alone(
    sandbox: SandboxClient, repo_settings: Settings, l3: LaunchRequest
) -> None:
    gl = sandbox.gitlab()
    project = gl.projects.get(REPO)
    commit(project, "main", [{"action": "create", "file_path": "README.md", "content": "plans"}])
    project.branches.create({"branch": "quoted", "ref": "main"})
    content = launch_file(retarget(l3, sandbox.url))
    commit(
        project,
        "quoted",
        [{"action": "create", "file_path": "launches/q.yaml", "content": content}],
    )
    mr = project.mergerequests.create(
        {"source_branch": "quoted", "target_branch": "main", "title": "Quoting the bot"}
    )
    someone = sandbox.sandbox.gitlab.user("someone", create=True)
    assert someone is not None
    quoted = f"Why does the bot write {PREVIEW_MARKER} here?"
    with sandbox.sandbox.repo.tx() as db:
        db.execute(
            "INSERT INTO mr_notes (project_id, mr_iid, body, author_id, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, '2026-11-23T00:00:00Z', '2026-11-23T00:00:00Z')",
            (project.id, mr.iid, quoted, someone["id"]),
        )
    out = preview(merge_request=mr_event(project, mr))
    assert out["comment"] == "created"
    bodies = [n.body for n in mr.notes.list(get_all=True)]
    assert quoted in bodies and len([b for b in bodies if b.startswith(PREVIEW_MARKER)]) == 1


def test_a_force_push_that_drops_a_launch_file_cancels_it(
    sandbox: SandboxClient, repo_settings: Settings, l3: LaunchRequest
) -> None:
    """main rewound to an earlier commit: the straight compare sees the file gone."""
    gl = sandbox.gitlab()
    project = gl.projects.get(REPO)
    request = retarget(l3, sandbox.url)
    base = commit(project, "main", [{"action": "create", "file_path": "README.md", "content": "x"}])
    added = commit(
        project,
        "main",
        [{"action": "create", "file_path": "launches/f.yaml", "content": launch_file(request)}],
    )
    launch(request=request)
    with sandbox.sandbox.repo.tx() as db:  # what `git push --force` of `base` does
        db.execute(
            "UPDATE repo_branches SET sha = ? WHERE project_id = ? AND name = 'main'",
            (base, project.id),
        )
    out = apply_launches(
        push=Push.model_validate(
            {
                "ref": "refs/heads/main",
                "before": added,
                "after": base,
                "project": {"id": project.id, "path_with_namespace": REPO},
            }
        )
    )
    assert out["cancelled"] == {"launches/f.yaml": "updated"} and out["started"] == {}
