"""From a GitLab release to a launch request: the tier rules, in order."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from tminus.errors import LaunchFileError
from tminus.release import (
    Release,
    decide_tier,
    find_launch_file,
    request_from_release,
    tier_from_description,
)
from tminus.request import Tier, load_launch_file

from .conftest import EXAMPLES

PAYLOAD = {
    "action": "create",
    "tag": "v1.1",
    "name": "v1.1",
    "description": "v1.1 has been released",
    "url": "https://example.com/gitlab-org/release-webhook-example/-/releases/v1.1",
    "released_at": "2020-11-02T12:55:12+00:00",
    "project": {"id": 2, "path_with_namespace": "gitlab-org/release-webhook-example"},
    "instance": "https://gitlab.example.com",
    "delivery": "f5e5f430",
}


def release(**changes: object) -> Release:
    return Release.model_validate({**PAYLOAD, **changes})


def test_tier_line_wins_over_everything() -> None:
    rel = release(description="Big one.\nLaunch-Tier: l1\n")
    file_request = load_launch_file(EXAMPLES / "l3.yaml")
    decision = decide_tier(rel, file_request, EXAMPLES / "l3.yaml", Tier.L3)
    assert decision.tier is Tier.L1
    assert decision.rule == "Launch-Tier line in the release description"


def test_launch_file_then_project_default() -> None:
    file_request = load_launch_file(EXAMPLES / "l2.yaml")
    with_file = decide_tier(release(), file_request, EXAMPLES / "l2.yaml", Tier.L3)
    assert (with_file.tier, with_file.rule) == (Tier.L2, f"launch file {EXAMPLES / 'l2.yaml'}")
    default = decide_tier(release(), None, None, Tier.L3)
    assert default.tier is Tier.L3
    assert default.rule == "default tier of project gitlab-org/release-webhook-example"


def test_bad_tier_line_names_the_value() -> None:
    with pytest.raises(LaunchFileError, match="Launch-Tier: got 'XL'"):
        tier_from_description("Launch-Tier: XL")
    assert tier_from_description("no tier here") is None


def test_launch_file_found_by_tag(tmp_path: Path) -> None:
    (tmp_path / "merge.yaml").write_text((EXAMPLES / "l2.yaml").read_text())
    (tmp_path / "broken.yaml").write_text("slug: [")
    assert find_launch_file(tmp_path, "v17.9.0") == tmp_path / "merge.yaml"
    assert find_launch_file(tmp_path, "v0") is None
    (tmp_path / "v0.yaml").write_text("anything")
    assert find_launch_file(tmp_path, "v0") == tmp_path / "v0.yaml"
    assert find_launch_file(None, "v1") is None


def test_a_broken_launch_file_for_the_release_is_not_passed_over(tmp_path: Path) -> None:
    text = (EXAMPLES / "l2.yaml").read_text() + "colour: red\n"
    (tmp_path / "merge.yaml").write_text(text)
    path = find_launch_file(tmp_path, "v17.9.0")
    assert path == tmp_path / "merge.yaml"
    with pytest.raises(LaunchFileError, match="colour"):
        load_launch_file(path)


def test_request_built_from_the_release_itself() -> None:
    rel = release()
    decision = decide_tier(rel, None, None, Tier.L3)
    request = request_from_release(
        rel, decision, launch_file=None, owner="pmm", launch_project=None, today=date(2030, 1, 1)
    )
    assert request.slug == "release-webhook-example-v1-1"
    assert request.tier is Tier.L3
    assert request.launch_date == date(2020, 11, 2)
    assert request.project == "gitlab-org/release-webhook-example"
    assert str(request.features[0].docs_urls[0]) == PAYLOAD["url"]
    assert request.release_tag == "v1.1"


def test_launch_file_keeps_its_fields_and_takes_the_decided_tier() -> None:
    file_request = load_launch_file(EXAMPLES / "l2.yaml")
    rel = release(description="Launch-Tier: L1")
    decision = decide_tier(rel, file_request, None, Tier.L3)
    request = request_from_release(
        rel,
        decision,
        launch_file=file_request,
        owner="x",
        launch_project=None,
        today=date(2030, 1, 1),
    )
    assert request.slug == file_request.slug and request.tier is Tier.L1
