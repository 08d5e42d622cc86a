"""The launch's GitLab check (``tasks.issues.check_gitlab``): what it reads, whom it looks up."""

from __future__ import annotations

import pytest

from tests.conftest import TODAY
from tminus.domain.issues import IssueWrite, compose_description
from tminus.domain.planner import plan_launch
from tminus.domain.playbook import Playbook
from tminus.domain.request import LaunchRequest
from tminus.errors import PermanentError
from tminus.integrations.gitlab_memory import MemoryTracker
from tminus.tasks.issues import check_gitlab


class CountingTracker(MemoryTracker):
    """Counts the users API's calls, one per username."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lookups: list[str] = []

    def user_id(self, username: str) -> int | None:
        self.lookups.append(username)
        return super().user_id(username)


def people(request: LaunchRequest) -> dict[str, int]:
    names = dict.fromkeys([request.owner, *request.team.values()])
    return {name: 100 + i for i, name in enumerate(names)}


def test_a_first_run_looks_up_every_person_once(l1: LaunchRequest, playbook: Playbook) -> None:
    plan = plan_launch(l1, playbook, TODAY)
    tracker = CountingTracker([l1.project], people(l1))
    seen = check_gitlab.fn(tracker, plan)
    assert seen.user_ids == people(l1)
    assert sorted(tracker.lookups) == sorted(people(l1))
    assert seen.issues == {}
    assert seen.labels == set()


def test_people_assigned_the_launchs_issues_are_not_looked_up_again(
    l1: LaunchRequest, playbook: Playbook
) -> None:
    plan = plan_launch(l1, playbook, TODAY)
    ids = people(l1)
    tracker = CountingTracker([l1.project], ids)
    spec = plan.tracking
    # GitLab keeps a username's case as registered; the request may spell it otherwise.
    owner = l1.owner.upper()
    tracker._users = {owner if n == l1.owner else n: i for n, i in ids.items()}
    write = IssueWrite(
        title=spec.title,
        description=compose_description("managed", spec.key),
        assignee_ids=(ids[l1.owner],),
    )
    tracker.create_issue(l1.project, write, (l1.launch_label,))
    seen = check_gitlab.fn(tracker, plan)
    assert seen.user_ids == ids
    assert spec.key in seen.issues
    assert l1.launch_label in seen.labels  # type: ignore[operator]
    assert sorted(tracker.lookups) == sorted(set(ids) - {l1.owner})


def test_an_unknown_person_fails_naming_the_field(l1: LaunchRequest, playbook: Playbook) -> None:
    plan = plan_launch(l1, playbook, TODAY)
    ids = people(l1)
    role, name = next(iter(l1.team.items()))
    tracker = CountingTracker([l1.project], {n: i for n, i in ids.items() if n != name})
    with pytest.raises(PermanentError) as caught:
        check_gitlab.fn(tracker, plan)
    assert f"team.{role}: GitLab has no user {name!r}" in str(caught.value)
    assert "fix the username in the launch request" in str(caught.value)


def test_a_missing_project_is_the_error_not_its_people(
    l1: LaunchRequest, playbook: Playbook
) -> None:
    plan = plan_launch(l1, playbook, TODAY)
    tracker = CountingTracker(["some/other"], {})
    with pytest.raises(PermanentError, match="project not found"):
        check_gitlab.fn(tracker, plan)
    assert tracker.lookups == []
