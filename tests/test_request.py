"""Launch files: valid examples load; invalid ones fail naming the field, value and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tminus.errors import LaunchFileError
from tminus.request import Tier, load_launch_file, parse_launch_request, slugify

from .conftest import EXAMPLES


def base() -> dict:
    return yaml.safe_load((EXAMPLES / "l2.yaml").read_text())


@pytest.mark.parametrize("name,tier", [("l1", Tier.L1), ("l2", Tier.L2), ("l3", Tier.L3)])
def test_examples_load(name: str, tier: Tier) -> None:
    request = load_launch_file(EXAMPLES / f"{name}.yaml")
    assert request.tier is tier
    assert request.features


@pytest.mark.parametrize(
    "change,field,words",
    [
        ({"tier": "L4"}, "tier", ["'L4'", "'L1', 'L2' or 'L3'"]),
        ({"launch_date": None}, "launch_date", ["None"]),
        ({"launch_date": "next tuesday"}, "launch_date", ["'next tuesday'", "YYYY-MM-DD"]),
        ({"slug": "Has Spaces"}, "slug", ["'Has Spaces'", "pattern"]),
        ({"owner": "bad user!"}, "owner", ["'bad user!'"]),
        ({"project": "no-namespace"}, "project", ["'no-namespace'"]),
        ({"features": []}, "features", ["at least 1"]),
        ({"colour": "red"}, "colour", ["remove it"]),
    ],
)
def test_invalid_field_is_named(change: dict, field: str, words: list[str]) -> None:
    data = base()
    data.update(change)
    with pytest.raises(LaunchFileError) as err:
        parse_launch_request(data, "l2.yaml")
    message = str(err.value)
    assert message.startswith("l2.yaml is not valid")
    line = next(p for p in err.value.problems if p.startswith(field))
    for word in words:
        assert word in line, line


def test_missing_date_is_named() -> None:
    data = base()
    del data["launch_date"]
    with pytest.raises(LaunchFileError) as err:
        parse_launch_request(data)
    assert err.value.problems == ["launch_date: missing; add it"]


def test_malformed_docs_url_names_the_nested_field() -> None:
    data = base()
    data["features"][0]["docs_urls"] = ["docs.example.com/no-scheme", "https://ok.example.com"]
    with pytest.raises(LaunchFileError) as err:
        parse_launch_request(data)
    (problem,) = err.value.problems
    assert problem.startswith("features[0].docs_urls[0]: got 'docs.example.com/no-scheme'")
    assert "https://" in problem


def test_every_problem_is_reported_at_once() -> None:
    data = base()
    data.update(tier="XL", owner="")
    del data["title"]
    with pytest.raises(LaunchFileError) as err:
        parse_launch_request(data)
    fields = sorted(p.split(":")[0] for p in err.value.problems)
    assert fields == ["owner", "tier", "title"]


def test_summary_must_be_one_line() -> None:
    data = base()
    data["features"][0]["summary"] = "line one is long enough\nline two"
    with pytest.raises(LaunchFileError, match="one line"):
        parse_launch_request(data)


def test_duplicate_feature_names_are_refused() -> None:
    data = base()
    data["features"].append(dict(data["features"][0], name="Merge Trains!"))
    with pytest.raises(LaunchFileError, match="same key 'merge-trains'"):
        parse_launch_request(data)


def test_owner_and_team_accept_at_sign() -> None:
    data = base()
    data.update(owner="@priya", team={"docs": "@dana"})
    request = parse_launch_request(data)
    assert request.owner == "priya"
    assert request.team == {"docs": "dana"}


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(LaunchFileError, match="file not found"):
        load_launch_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("slug: [unclosed\n")
    with pytest.raises(LaunchFileError, match=r"(?s)bad.yaml.*line 2"):
        load_launch_file(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(LaunchFileError, match="expected a mapping"):
        load_launch_file(listing)


def test_slugify() -> None:
    assert slugify("Duo Chat (Beta)") == "duo-chat-beta"
    assert slugify("!!!") == "item"


def test_pitch_word_limits_are_named() -> None:
    data = base()
    data["pitch"] = {"words_25": "word " * 26, "words_50": "ok", "words_100": "ok"}
    with pytest.raises(LaunchFileError) as err:
        parse_launch_request(data)
    (problem,) = err.value.problems
    assert problem.startswith("pitch: got ")
    assert "words_25 has 26 words; shorten it to 25 or fewer" in problem


def test_l1_example_carries_the_sales_kit() -> None:
    request = load_launch_file(EXAMPLES / "l1.yaml")
    assert request.pitch is not None and request.blog_url is not None
    assert all(f.audience and f.pain and f.selling_points for f in request.features)


def test_cli_bad_today_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    from tminus.cli import main

    assert main(["plan", str(EXAMPLES / "l1.yaml"), "--today", "2027-13-01"]) == 2
    err = capsys.readouterr().err
    assert "--today" in err and "YYYY-MM-DD" in err
