"""From a GitLab release to a launch request: the tier rules, in order."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tminus.domain.release import (
    DESCRIPTION_MAX_CHARS,
    Release,
    decide_tier,
    description_excerpt,
    release_day,
    request_from_release,
    tier_from_description,
)
from tminus.domain.request import Tier
from tminus.errors import LaunchFileError
from tminus.integrations.files import find_launch_file, load_launch_file

from .conftest import EXAMPLES

PROJECT: dict[str, object] = {"id": 2, "path_with_namespace": "gitlab-org/release-webhook-example"}
PAYLOAD: dict[str, object] = {
    "action": "create",
    "tag": "v1.1",
    "name": "v1.1",
    "description": "v1.1 has been released",
    "url": "https://example.com/gitlab-org/release-webhook-example/-/releases/v1.1",
    "released_at": "2020-11-02T12:55:12+00:00",
    "project": PROJECT,
    "instance": "https://gitlab.example.com",
    "delivery": "f5e5f430",
}


def release(**changes: object) -> Release:
    return Release.model_validate({**PAYLOAD, **changes})


def test_tier_line_wins_over_everything() -> None:
    rel = release(description="Big one.\nLaunch-Tier: l1\n")
    file_request = load_launch_file(EXAMPLES / "l3.yaml")
    decision = decide_tier(rel, file_request, str(EXAMPLES / "l3.yaml"), Tier.L3)
    assert decision.tier is Tier.L1
    assert decision.rule == "Launch-Tier line in the release description"


def test_launch_file_then_project_default() -> None:
    file_request = load_launch_file(EXAMPLES / "l2.yaml")
    with_file = decide_tier(release(), file_request, str(EXAMPLES / "l2.yaml"), Tier.L3)
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


# --- bounded to what GitLab sends ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"project": {**PROJECT, "id": 10**30}}, "project.id"),
        ({"project": {**PROJECT, "id": 2**31}}, "project.id"),
        ({"project": {**PROJECT, "id": 0}}, "project.id"),
        ({"project": {**PROJECT, "id": True}}, "project.id"),
        ({"project": {**PROJECT, "path_with_namespace": "../etc"}}, "project.path"),
        ({"project": {**PROJECT, "path_with_namespace": "a/" + "b" * 2000}}, "project"),
        ({"tag": "../x"}, "tag"),
        ({"tag": "-rf"}, "tag"),
        ({"tag": "/etc/passwd"}, "tag"),
        ({"tag": "v1 .0"}, "tag"),
        ({"tag": "v1\x00"}, "tag"),
        ({"tag": "v1.lock"}, "tag"),
        ({"tag": "v1@{0}"}, "tag"),
        ({"tag": "v" * 256}, "tag"),
        ({"name": "n" * 1025}, "name"),
        ({"description": "d" * 4001}, "description"),
        ({"description": "bad \ud800 text"}, "description"),
        ({"url": "javascript:alert(1)"}, "url"),
        ({"url": "https://example.com/" + "x" * 2100}, "url"),
        ({"released_at": "9999-12-31T23:59:59-23:59"}, "released_at"),
        ({"released_at": "1066-10-14T09:00:00+00:00"}, "released_at"),
        ({"released_at": "last tuesday"}, "released_at"),
        ({"delivery": "k" * 256}, "delivery"),
    ],
)
def test_release_refuses_what_gitlab_never_sends(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        release(**changes)
    locations = [".".join(str(p) for p in e["loc"]) for e in caught.value.errors()]
    assert any(loc.startswith(field) for loc in locations), locations


@pytest.mark.parametrize(
    "tag", ["v1.1", "v17.2.0-rc.1+build.5", "release/2024-01", "версия-2", "a" * 255, "x"]
)
def test_release_takes_real_tags(tag: str) -> None:
    assert release(tag=tag).tag == tag


def test_release_takes_the_largest_gitlab_id_and_a_date_only_time() -> None:
    rel = release(project={**PROJECT, "id": 2**31 - 1}, released_at="2031-01-02")
    assert rel.project.id == 2**31 - 1
    assert release_day(rel, date(2030, 1, 1)) == date(2031, 1, 2)


def test_launch_file_lookup_never_leaves_the_folder(tmp_path: Path) -> None:
    """Defence in depth under the models: a tag that climbs out finds nothing."""
    launches = tmp_path / "launches"
    launches.mkdir()
    (tmp_path / "x.yaml").write_text("release_tag: ../x\n")
    (tmp_path / "secret.yaml").write_text("release_tag: v9\n")
    assert find_launch_file(launches, "../x") is None
    assert find_launch_file(launches, str(tmp_path / "x")) is None  # absolute
    (launches / "linked.yaml").symlink_to(tmp_path / "secret.yaml")
    assert find_launch_file(launches, "v9") is None
    assert find_launch_file(launches, "linked") is None
    # Inside the folder, also in a subfolder (tags may hold '/'), files are still found.
    (launches / "release").mkdir()
    (launches / "release" / "v2.yaml").write_text("anything")
    assert find_launch_file(launches, "release/v2") == launches / "release" / "v2.yaml"


# --- the description excerpt the run receives ----------------------------------------------------


def _decision(description: str) -> str:
    try:
        tier = tier_from_description(description)
    except LaunchFileError as exc:
        return f"error: {exc}"[:60]
    return tier.value if tier else "none"


def test_a_900_kb_description_becomes_an_excerpt_that_decides_the_same() -> None:
    notes = (
        "Dark mode for everyone.\n" + ("A long changelog line.\n" * 40_000) + "Launch-Tier: L2\n"
    )
    assert len(notes) > 900_000
    excerpt = description_excerpt(notes)
    assert len(excerpt) <= DESCRIPTION_MAX_CHARS
    assert tier_from_description(excerpt) is Tier.L2
    assert excerpt.endswith(f"the full notes ({len(notes):,} characters) are in GitLab]")
    rel = release(description=excerpt)  # the flow's model takes it
    request = request_from_release(
        rel,
        decide_tier(rel, None, None, Tier.L3),
        launch_file=None,
        owner="pmm",
        launch_project=None,
        today=date(2030, 1, 1),
    )
    assert request.tier is Tier.L2
    assert request.features[0].summary == "Dark mode for everyone."
    short = "Launch-Tier: L1\nsmall notes"
    assert description_excerpt(short) == short


_LINES = st.sampled_from(
    ["", " ", "Launch-Tier: L1", "launch-tier:   l3  ", "Launch-Tier: XL", "Launch-Tier:", "L2"]
) | st.text(alphabet=st.sampled_from("Launch-Tier: L12\n x"), max_size=30)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    lines=st.lists(_LINES, max_size=40),
    limit=st.integers(min_value=120, max_value=400),
)
def test_excerpt_decides_the_tier_like_the_whole_description(lines: list[str], limit: int) -> None:
    notes = "\n".join(lines)
    excerpt = description_excerpt(notes, limit)
    assert len(excerpt) <= max(limit, len(notes) if len(notes) <= limit else 0)
    assert _decision(excerpt) == _decision(notes), (notes, excerpt)


_TAGS = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._+/-]{0,60}\Z").filter(
    lambda t: (
        ".." not in t
        and "//" not in t
        and not t.endswith(("/", ".", ".lock"))
        and "/." not in t
        and not any(p.endswith(".lock") for p in t.split("/"))
    )
)


_NOW = datetime(2031, 5, 6, tzinfo=UTC)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    tag=_TAGS | st.just("x"),
    name=st.none()
    | st.text(max_size=40).filter(lambda s: "\x00" not in s)
    | st.text(min_size=100, max_size=1024).filter(lambda s: "\x00" not in s),
    description=st.none() | st.text(max_size=600).filter(lambda s: "\x00" not in s),
    path=st.from_regex(
        r"\A[A-Za-z0-9_.][A-Za-z0-9_.-]{0,30}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}){1,3}\Z"
    ),
    released=st.datetimes(
        # the years a launch can be planned in (tminus.domain.request)
        min_value=datetime(2001, 1, 1),
        max_value=datetime(2099, 1, 1),
        timezones=st.just(UTC),
    ),
)
@example(tag="v1", name="N" * 1024, description=None, path="a/b", released=_NOW)
@example(tag="v1", name="a\x01\tb\n", description="x\x0b\x1fy", path="a/b", released=_NOW)
@example(tag="v1", name=" ", description=" a" + " " * 300 + "b" * 300, path="a/b", released=_NOW)
def test_every_valid_release_becomes_a_launch_request(
    tag: str, name: str | None, description: str | None, path: str, released: datetime
) -> None:
    """What the receiver accepts, the flow can run: no release it lets through makes an
    invalid launch request (a bad Launch-Tier value is the one error, and it names itself)."""
    try:
        rel = release(
            tag=tag,
            name=name,
            description=description,
            released_at=released.isoformat(),
            project={"id": 7, "path_with_namespace": path},
        )
    except ValidationError:
        assume(False)
        return
    try:
        decision = decide_tier(rel, None, None, Tier.L3)
    except LaunchFileError:
        return  # a Launch-Tier line with a bad value: the run fails naming it
    request = request_from_release(
        rel, decision, launch_file=None, owner="pmm", launch_project=None, today=date(2030, 1, 1)
    )
    assert request.release_tag == tag


def test_a_yaml_bomb_in_the_launches_folder_is_passed_over_at_once(tmp_path: Path) -> None:
    """Every release run looks through the folder: a bomb there must not stall them all."""
    import time

    from .test_request import billion_laughs

    (tmp_path / "a-bomb.yaml").write_text(billion_laughs(10))
    (tmp_path / "merge.yaml").write_text("release_tag: v17.9.0\n")
    started = time.monotonic()
    assert find_launch_file(tmp_path, "v17.9.0") == tmp_path / "merge.yaml"
    assert time.monotonic() - started < 2
