"""The issue tracker port's contract: the same tests against the in-memory fake and against the
GitLab adapter over real HTTP to the stand-in. What the reconcile relies on is here: what was
applied is observed back, and the diff of the plan against that observation is all no-ops."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest

from tminus.domain.issues import (
    IssueTracker,
    IssueWrite,
    compose_description,
    issue_change,
    label_change,
)
from tminus.domain.plan import key_marker_prefix
from tminus.domain.planner import plan_launch
from tminus.domain.playbook import Playbook
from tminus.domain.request import LaunchRequest
from tminus.domain.results import Outcome
from tminus.errors import PermanentError
from tminus.integrations import gitlab as gitlab_adapter
from tminus.integrations.gitlab import build_tracker
from tminus.integrations.gitlab_memory import MemoryTracker
from tminus.settings import load_settings

from ..conftest import TODAY, SandboxClient, sandbox_env

PROJECT = "marketing/launches"


@pytest.fixture(params=["memory", "gitlab"])
def tracker(request: pytest.FixtureRequest) -> Iterator[IssueTracker]:
    if request.param == "memory":
        yield MemoryTracker([PROJECT], users={"priya.pmm": 7})
        return
    sandbox: SandboxClient = request.getfixturevalue("sandbox")
    yield build_tracker(load_settings(sandbox_env(sandbox.url)))


def write(key: str, title: str = "T", **kw: object) -> IssueWrite:
    description = compose_description("body", key)
    return IssueWrite(title=title, description=description, due_date=date(2027, 1, 1), **kw)  # type: ignore[arg-type]


def test_unknown_project_is_refused(tracker: IssueTracker) -> None:
    with pytest.raises(PermanentError) as info:
        tracker.check_project("999999")
    assert info.value.status == 404


def test_created_issue_is_found_by_label_and_by_marker(tracker: IssueTracker) -> None:
    created = tracker.create_issue(PROJECT, write("demo/activity/a"), ("launch::demo", "x"))
    assert created.key == "demo/activity/a" and created.state == "opened"
    (found,) = tracker.find_issues(PROJECT, "launch::demo", "tminus:key=demo/")
    assert (found.iid, found.key, found.labels) == (created.iid, "demo/activity/a", created.labels)
    assert found.due_date == date(2027, 1, 1)
    assert {"launch::demo", "x"} <= tracker.project_labels(PROJECT)
    # People remove labels: the key marker still finds the issue.
    tracker.update_issue(PROJECT, created.iid, IssueWrite(remove_labels=("launch::demo",)))
    (again,) = tracker.find_issues(PROJECT, "launch::demo", "tminus:key=demo/")
    assert again.iid == created.iid and "launch::demo" not in again.labels


def test_update_sends_only_what_it_names(tracker: IssueTracker) -> None:
    created = tracker.create_issue(PROJECT, write("demo/activity/a"), ("a", "b"))
    updated = tracker.update_issue(
        PROJECT, created.iid, IssueWrite(title="New", add_labels=("c",), remove_labels=("a",))
    )
    assert updated.title == "New" and set(updated.labels) == {"b", "c"}
    assert updated.description == created.description and updated.due_date == created.due_date
    assert created.closed_at is None
    closed = tracker.update_issue(PROJECT, created.iid, IssueWrite(state_event="close"))
    assert closed.state == "closed"
    # When it was closed (the retrospective's late work): now, with a time zone.
    assert closed.closed_at is not None and closed.closed_at.tzinfo is not None
    assert abs((datetime.now(UTC) - closed.closed_at).total_seconds()) < 60
    assert tracker.list_issues(PROJECT, ["b"]) == []
    (listed,) = tracker.list_issues(PROJECT, ["b"], state="all")
    assert (listed.iid, listed.closed_at) == (created.iid, closed.closed_at)
    reopened = tracker.update_issue(PROJECT, created.iid, IssueWrite(state_event="reopen"))
    assert reopened.state == "opened" and reopened.closed_at is None


def test_labels_are_created_once(tracker: IssueTracker) -> None:
    assert tracker.ensure_labels(PROJECT, ["a", "launch-tier::L1"]) == ["a", "launch-tier::L1"]
    assert tracker.ensure_labels(PROJECT, ["a", "launch-tier::L1", "b"]) == ["b"]
    assert {"a", "b", "launch-tier::L1"} <= tracker.project_labels(PROJECT)


def test_links_go_both_ways_and_are_idempotent(tracker: IssueTracker) -> None:
    one, two, three = (
        tracker.create_issue(PROJECT, write(f"demo/activity/{n}"), ()).iid for n in "abc"
    )
    tracker.link_issues(PROJECT, one, two)
    tracker.link_issues(PROJECT, one, three)
    tracker.link_issues(PROJECT, one, two)  # again: no error, no second link
    assert tracker.linked_iids(PROJECT, one) == {two, three}
    assert tracker.linked_iids(PROJECT, two) == {one}


def test_blocking_links_are_typed_and_idempotent(tracker: IssueTracker) -> None:
    tracking, review, social = (
        tracker.create_issue(PROJECT, write(f"demo/activity/{n}"), ()).iid for n in "abc"
    )
    tracker.link_issues(PROJECT, tracking, social)
    assert tracker.block_issue(PROJECT, review, social) is True
    assert tracker.block_issue(PROJECT, review, social) is True  # again: no second link
    assert tracker.blocker_iids(PROJECT, social) == {review}
    assert tracker.blocker_iids(PROJECT, review) == set()  # it blocks; nothing blocks it
    assert tracker.linked_iids(PROJECT, social) == {tracking, review}
    # Issues already related cannot also block: the caller learns it and falls back.
    assert tracker.block_issue(PROJECT, tracking, social) is False
    assert tracker.blocker_iids(PROJECT, social) == {review}


def test_open_blockers_of_many_issues_are_read_at_once(
    tracker: IssueTracker, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gitlab_adapter, "BLOCKERS_PER_QUERY", 2)  # pages of 2 issues
    a, b, c, d, e = (
        tracker.create_issue(PROJECT, write(f"demo/activity/{n}"), ()).iid for n in "abcde"
    )
    other = tracker.create_issue(PROJECT, write("demo/activity/f"), ()).iid
    for blocker, blocked in [(a, c), (b, c), (a, d), (other, e)]:
        assert tracker.block_issue(PROJECT, blocker, blocked) is True
    tracker.link_issues(PROJECT, b, d)  # related, not blocking
    tracker.update_issue(PROJECT, other, IssueWrite(state_event="close"))
    if not isinstance(tracker, MemoryTracker):
        request.getfixturevalue("sandbox").clear_log()
    found = tracker.open_blockers(PROJECT, [c, d, e, a, b])
    # GitLab lists only open blockers: the closed one no longer blocks e.
    assert found == {c: {a, b}, d: {a}, e: set(), a: set(), b: set()}
    if not isinstance(tracker, MemoryTracker):
        sandbox: SandboxClient = request.getfixturevalue("sandbox")
        asked = [r for r in sandbox.requests() if r["path"] == "/api/graphql"]
        assert len(asked) == 3  # 5 issues, 2 a request
        assert [r for r in sandbox.requests() if r["path"] != "/api/graphql"] == []
    assert tracker.blocker_iids(PROJECT, e) == {other}  # the link itself is still there
    assert tracker.open_blockers(PROJECT, []) == {}


def _free(tracker: IssueTracker, request: pytest.FixtureRequest) -> None:
    if isinstance(tracker, MemoryTracker):
        tracker.blocking_links = False
    else:
        request.getfixturevalue("sandbox").sandbox.gitlab.blocked_issues = False


def test_gitlab_free_makes_no_blocking_link(
    tracker: IssueTracker, request: pytest.FixtureRequest
) -> None:
    _free(tracker, request)
    review, social = (
        tracker.create_issue(PROJECT, write(f"demo/activity/{n}"), ()).iid for n in "ab"
    )
    assert tracker.block_issue(PROJECT, review, social) is False
    assert tracker.blocker_iids(PROJECT, social) == set()
    assert tracker.open_blockers(PROJECT, [review, social]) == {review: set(), social: set()}
    assert tracker.linked_iids(PROJECT, social) == set()
    tracker.link_issues(PROJECT, review, social)  # related links still work
    assert tracker.linked_iids(PROJECT, social) == {review}


def test_notes_are_found_oldest_first_and_updated_in_place(tracker: IssueTracker) -> None:
    iid = tracker.create_issue(PROJECT, write("demo/tracking"), ()).iid
    assert tracker.find_note(PROJECT, iid, "marker") is None
    first = tracker.add_note(PROJECT, iid, "one <!-- marker -->")
    second = tracker.add_note(PROJECT, iid, "two <!-- marker -->")
    assert tracker.find_note(PROJECT, iid, "marker") == (first, "one <!-- marker -->")
    assert tracker.find_note(PROJECT, iid, "marker", after=first) == (
        second,
        "two <!-- marker -->",
    )
    tracker.update_note(PROJECT, iid, first, "edited <!-- marker -->")
    assert tracker.find_note(PROJECT, iid, "marker") == (first, "edited <!-- marker -->")


def test_applied_plan_observes_back_as_no_changes(
    tracker: IssueTracker, playbook: Playbook, l3: LaunchRequest
) -> None:
    """Observe -> diff -> apply, then observe again: the diff is empty."""
    plan = plan_launch(l3, playbook, TODAY)
    project = plan.request.project
    ids = {name: uid for name in (l3.owner,) if (uid := tracker.user_id(name)) is not None}
    tracker.check_project(project)

    def observe() -> dict[str, object]:
        found = tracker.find_issues(project, l3.launch_label, key_marker_prefix(l3.slug))
        return {s.key: s for s in found if s.key}

    labels = label_change(plan, tracker.project_labels(project))
    assert labels.planned().outcome is Outcome.created
    tracker.ensure_labels(project, list(labels.missing))
    for spec in plan.all_issues:
        change = issue_change(spec, None, refs={}, assignee_id=ids.get(spec.assignee or ""))
        assert change.planned().outcome is Outcome.created
        tracker.create_issue(project, change.write, spec.labels)

    observed = observe()
    assert set(observed) == {spec.key for spec in plan.all_issues}
    assert label_change(plan, tracker.project_labels(project)).planned().outcome is (
        Outcome.unchanged
    )
    for spec in plan.all_issues:
        again = issue_change(
            spec,
            observed[spec.key],  # type: ignore[arg-type]
            refs={},
            assignee_id=ids.get(spec.assignee or ""),
        )
        assert again.planned().outcome is Outcome.unchanged, again


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> int:
    """GitLab's list in pages of 2 issues, so a few issues make several pages."""
    monkeypatch.setattr("tminus.integrations.gitlab.PAGE_SIZE", 2)
    return 2


def test_iter_issues_reads_every_page_oldest_first_with_the_filters(
    tracker: IssueTracker, small_pages: int
) -> None:
    labels = [("t", "x"), ("t",), ("x",), ("t", "x"), ("t", "x"), ("t",), ("t", "x"), ("t",)]
    iids = [
        tracker.create_issue(PROJECT, write(f"p/activity/{n}"), ls).iid
        for n, ls in enumerate(labels)
    ]
    closed = {iids[1], iids[4]}
    for iid in closed:
        tracker.update_issue(PROJECT, iid, IssueWrite(state_event="close"))
    with_t = [iid for iid, ls in zip(iids, labels, strict=True) if "t" in ls]
    with_both = [iid for iid, ls in zip(iids, labels, strict=True) if {"t", "x"} <= set(ls)]

    def listed(labels: list[str], state: str) -> list[int]:
        found = [s.iid for s in tracker.iter_issues(PROJECT, labels, state)]
        assert found == [s.iid for s in tracker.list_issues(PROJECT, labels, state)]
        return found

    assert len(with_t) > 3 * small_pages
    assert listed(["t"], "all") == with_t
    assert listed(["t"], "opened") == [i for i in with_t if i not in closed]
    assert listed(["t"], "closed") == [i for i in with_t if i in closed]
    assert listed(["t", "x"], "opened") == [i for i in with_both if i not in closed]
    assert listed(["nothing"], "all") == []
    (first, *_) = tracker.iter_issues(PROJECT, ["x"], "all")
    assert (first.iid, first.key, first.labels) == (iids[0], "p/activity/0", ("t", "x"))


def test_iter_issues_reads_as_it_is_consumed(tracker: IssueTracker, small_pages: int) -> None:
    """An issue created while the list is read comes last: nothing was read ahead of time."""
    iids = [tracker.create_issue(PROJECT, write(f"p/activity/{n}"), ("t",)).iid for n in "abc"]
    issues = tracker.iter_issues(PROJECT, ["t"])
    assert next(issues).iid == iids[0]
    late = tracker.create_issue(PROJECT, write("p/activity/late"), ("t",)).iid
    assert [s.iid for s in issues] == [*iids[1:], late]


def test_iter_issues_yields_an_issue_once_when_the_list_moves(
    tracker: IssueTracker, small_pages: int
) -> None:
    """An older issue that joins the list mid-read shifts the pages after it: the issue shifted
    onto the next page is not yielded again."""
    iids = [tracker.create_issue(PROJECT, write(f"p/activity/{n}"), ("t",)).iid for n in "abcde"]
    tracker.update_issue(PROJECT, iids[0], IssueWrite(state_event="close"))
    issues = tracker.iter_issues(PROJECT, ["t"])
    assert [next(issues).iid, next(issues).iid] == iids[1:3]
    tracker.update_issue(PROJECT, iids[0], IssueWrite(state_event="reopen"))
    assert [s.iid for s in issues] == iids[3:]


def test_iter_issues_of_an_unknown_project_is_refused(tracker: IssueTracker) -> None:
    with pytest.raises(PermanentError) as info:
        next(tracker.iter_issues("999999", ["t"]))
    assert info.value.status == 404


def test_open_blockers_of_a_project_named_by_id(sandbox: SandboxClient) -> None:
    """A launch may name its project by id; GitLab's GraphQL finds projects by path only."""
    tracker = build_tracker(load_settings(sandbox_env(sandbox.url)))
    review, social = (
        tracker.create_issue(PROJECT, write(f"demo/activity/{n}"), ()).iid for n in "ab"
    )
    assert tracker.block_issue(PROJECT, review, social) is True
    by_id = str(sandbox.gitlab().projects.get(PROJECT).id)
    fresh = build_tracker(load_settings(sandbox_env(sandbox.url)))
    assert fresh.open_blockers(by_id, [social, review]) == {social: {review}, review: set()}
