"""Launch files: valid examples load; invalid ones fail naming the field, value and fix."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

from tminus.domain.request import Tier, parse_launch_request, slugify
from tminus.errors import LaunchFileError
from tminus.integrations.files import load_launch_file

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
    from tminus.deployments.cli import main

    assert main(["plan", str(EXAMPLES / "l1.yaml"), "--today", "2027-13-01"]) == 2
    err = capsys.readouterr().err
    assert "--today" in err and "YYYY-MM-DD" in err


# --- hostile and unreadable files: refused fast, naming the file and the fix ---------------


def billion_laughs(levels: int = 10) -> str:
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    lines.append(f"slug: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def test_yaml_bomb_is_refused_while_reading(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    started = time.monotonic()
    with pytest.raises(LaunchFileError) as err:
        load_launch_file(bomb)
    assert time.monotonic() - started < 2
    (problem,) = err.value.problems
    assert "more than 20000 values once anchors and aliases are expanded" in problem
    assert problem.startswith("line ")


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("labels: &a [*a]\n")
    with pytest.raises(LaunchFileError, match="refers to a value that contains it"):
        load_launch_file(path)


def test_a_few_aliases_still_work(tmp_path: Path) -> None:
    data = base()
    text = yaml.safe_dump(data, sort_keys=False).replace("owner: ", "owner: &who ", 1)
    path = tmp_path / "aliases.yaml"
    path.write_text(text + "team: {docs: *who}\n")
    request = load_launch_file(path)
    assert request.team == {"docs": request.owner}


@pytest.mark.parametrize(
    "content,words",
    [
        (b"slug: caf\xe9\n", ["line 1", "0xe9", "not UTF-8", "save the file as UTF-8"]),
        (b"", ["is empty"]),
        (b"# only a comment\n", ["is empty"]),
        (b"- a\n- b\n", ["expected a mapping", "got list"]),
        (b"just text\n", ["expected a mapping", "got str"]),
        (b"[" * 5000 + b"]" * 5000, ["nested too deeply"]),
        (b"a: 1\n" + b"#" * (1024 * 1024), ["larger than 1024 KiB"]),
    ],
)
def test_unreadable_files_name_the_file_and_the_fix(
    tmp_path: Path, content: bytes, words: list[str]
) -> None:
    path = tmp_path / "launch.yaml"
    path.write_bytes(content)
    with pytest.raises(LaunchFileError) as err:
        load_launch_file(path)
    assert str(err.value).startswith(f"{path} is not valid")
    for word in words:
        assert word in str(err.value)


def test_a_folder_is_not_a_launch_file(tmp_path: Path) -> None:
    with pytest.raises(LaunchFileError, match="is a folder, not a file"):
        load_launch_file(tmp_path)


def test_cli_exits_2_on_a_non_utf8_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tminus.deployments.cli import main

    path = tmp_path / "latin1.yaml"
    path.write_bytes((EXAMPLES / "l2.yaml").read_bytes() + "title: Café\n".encode("latin-1"))
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "latin1.yaml" in err and "UTF-8" in err and "Traceback" not in err


def test_dates_yaml_cannot_hold_are_named(tmp_path: Path) -> None:
    path = tmp_path / "launch.yaml"
    text = (EXAMPLES / "l2.yaml").read_text()
    path.write_text(re.sub(r"launch_date: .*", "launch_date: 2027-13-45", text))
    with pytest.raises(LaunchFileError) as err:
        load_launch_file(path)
    (problem,) = err.value.problems
    assert problem.startswith("launch_date: got '2027-13-45'")
    assert "YYYY-MM-DD" in problem


def test_messages_print_at_most_80_characters_of_a_value() -> None:
    data = base()
    data["title"] = "x" * 100_000
    data["labels"] = [["deep"] * 10_000] * 10
    with pytest.raises(LaunchFileError) as err:
        parse_launch_request(data)
    title = next(p for p in err.value.problems if p.startswith("title"))
    assert "… (100000 characters)" in title
    assert len(title) < 250
    assert all(len(p) < 400 for p in err.value.problems)


# --- bounds: whatever validates can be delivered to GitLab, Calendar and Slack ----------------


@pytest.mark.parametrize("day", ["0001-01-01", "1999-12-31", "2101-01-01", "9999-12-31"])
def test_launch_date_outside_the_window_is_refused(day: str) -> None:
    data = base()
    data["launch_date"] = day
    with pytest.raises(LaunchFileError) as err:
        parse_launch_request(data)
    (problem,) = err.value.problems
    assert problem.startswith(f"launch_date: got '{day}'")
    assert "between 2000-01-01 and 2100-12-31" in problem


@pytest.mark.parametrize("day", ["2000-01-01", "2100-12-31"])
def test_launch_date_window_edges_are_accepted(day: str) -> None:
    data = base()
    data["launch_date"] = day
    assert parse_launch_request(data).launch_date.isoformat() == day


@pytest.mark.parametrize(
    "project,why",
    [
        ("../../etc", "'..'"),
        ("group/..", "'..'"),
        ("group/../other", "'..'"),
        ("/group/project", "no empty parts"),
        ("group/project/", "no empty parts"),
        ("group//project", "no empty parts"),
        ("-group/project", "'-group'"),
        ("group/project-", "'project-'"),
        ("group/.hidden", "'.hidden'"),
        ("group/a..b", "no '..'"),
        ("group/project.git", "'.git'"),
        ("group/pro ject", "'pro ject'"),
        ("group/pro%2fject", "'pro%2fject'"),
        ("group/" + "p" * 256, "at most 255"),
        ("/".join(["g"] * 22), "at most 21 parts"),
        ("0", "positive number"),
        ("0042", "positive number"),
        ("project", "group/project"),
    ],
)
def test_project_must_be_a_gitlab_path_or_id(project: str, why: str) -> None:
    data = base()
    data["project"] = project
    with pytest.raises(LaunchFileError) as err:
        parse_launch_request(data)
    (problem,) = err.value.problems
    assert problem.startswith("project: got ")
    assert why in problem


@pytest.mark.parametrize(
    "project,expected",
    [
        ("marketing/launches", "marketing/launches"),
        ("a/b/c_d/e.f-g", "a/b/c_d/e.f-g"),
        ("Group_1/sub.group/Project-2", "Group_1/sub.group/Project-2"),
        (42, "42"),
        ("278964", "278964"),
    ],
)
def test_valid_projects_are_kept(project: object, expected: str) -> None:
    data = base()
    data["project"] = project
    assert parse_launch_request(data).project == expected


@pytest.mark.parametrize(
    "change,field",
    [
        ({"title": "Launch\x00day"}, "title"),
        ({"title": "Two\nlines"}, "title"),
        ({"labels": ["a,b"]}, "labels[0]"),
        ({"labels": ["x" * 256]}, "labels[0]"),
        ({"labels": [f"l{i}" for i in range(21)]}, "labels"),
        ({"release_tag": "v1\x07"}, "release_tag"),
        ({"release_tag": "v" * 256}, "release_tag"),
        ({"owner": "a" * 256}, "owner"),
        ({"team": {"docs": "b" * 256}}, "team.docs"),
        ({"team": {"Not A Role": "ada"}}, "team"),
        ({"optional_activities": ["../x"]}, "optional_activities[0]"),
        ({"training": "t" * 281}, "training"),
    ],
)
def test_text_fields_are_bounded(change: dict, field: str) -> None:
    data = base()
    data.update(change)
    with pytest.raises(LaunchFileError) as err:
        parse_launch_request(data)
    assert any(p.startswith(f"{field}:") for p in err.value.problems), err.value.problems


def test_feature_lists_are_bounded() -> None:
    data = base()
    feature = data["features"][0]
    data["features"] = [dict(feature, name=f"Feature {i}") for i in range(21)]
    with pytest.raises(LaunchFileError, match="features: got"):
        parse_launch_request(data)
    data = base()
    data["features"][0]["docs_urls"] = [f"https://docs.example.com/{i}" for i in range(6)]
    data["features"][0]["selling_points"] = ["s" * 281]
    with pytest.raises(LaunchFileError) as err:
        parse_launch_request(data)
    fields = sorted(p.split(":")[0] for p in err.value.problems)
    assert fields == ["features[0].docs_urls", "features[0].selling_points[0]"]


def test_launch_files_parse_without_a_file() -> None:
    """The domain parses bytes; the same bounds and messages hold with no file involved."""
    from tminus.domain.request import parse_launch_file
    from tminus.domain.validation import MAX_FILE_BYTES

    text = yaml.safe_dump(base(), sort_keys=False).encode()
    assert parse_launch_file(text, "form.yaml").slug == base()["slug"]
    with pytest.raises(LaunchFileError, match=r"^form.yaml is not valid") as err:
        parse_launch_file(b"x" * (MAX_FILE_BYTES + 1), "form.yaml")
    assert err.value.problems == ["is larger than 1024 KiB; is it the right file?"]
    with pytest.raises(LaunchFileError, match="refers to a value that contains it"):
        parse_launch_file(b"labels: &a [*a]\n", "loop.yaml")
