"""Playbooks: the default validates; a broken one fails naming the file, the entry, the reason."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import pytest
import yaml

from tminus.domain.playbook import Frequency, Kind
from tminus.domain.request import Tier
from tminus.errors import PlaybookError
from tminus.integrations.files import default_playbook_path, load_playbook


def test_default_playbook_matches_the_handbook_matrix() -> None:
    playbook = load_playbook()
    matrix = {a.key: {t.value: f.value for t, f in a.tiers.items()} for a in playbook.activities}
    assert matrix["blog-post"] == {"L1": "always", "L2": "always", "L3": "always"}
    assert matrix["customer-comms"]["L3"] == "sometimes"
    assert "L3" not in matrix["sales-enablement"]
    assert matrix["features-page"] == {"L1": "always", "L2": "sometimes"}
    assert set(matrix["press-outreach"]) == {"L1"}
    assert playbook.approval_tiers == [Tier.L1]
    kinds = {a.kind for a in playbook.activities}
    assert kinds == set(Kind)
    assert all(isinstance(f, Frequency) for a in playbook.activities for f in a.tiers.values())


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "playbook.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def default_data() -> dict:
    return yaml.safe_load(default_playbook_path().read_text())


def test_own_playbook_loads(tmp_path: Path) -> None:
    data = default_data()
    data["name"] = "acme"
    data["activities"] = data["activities"][:2]
    data["activities"][1].pop("depends_on")  # on activities this copy no longer has
    assert load_playbook(write(tmp_path, data)).name == "acme"


@pytest.mark.parametrize(
    "mutate,expected",
    [
        (lambda d: d["activities"][1].update(tiers={"L9": "always"}), "activities[1].tiers.L9"),
        (
            lambda d: d["activities"][0].update(tiers={"L1": "often"}),
            "activities[0].tiers.L1: got 'often'",
        ),
        (lambda d: d["activities"][2].update(kind="fax"), "activities[2].kind: got 'fax'"),
        (
            lambda d: d["activities"][3].pop("lead_time_days"),
            "activities[3].lead_time_days: missing",
        ),
        (
            lambda d: d["activities"][4].update(owner_role="wizard"),
            "owner_role 'wizard' is not in roles",
        ),
        (
            lambda d: d["activities"][5].update(key=d["activities"][0]["key"]),
            "key is used twice",
        ),
        (
            lambda d: d["activities"][0].update(description="Due {{ launch.nope }}"),
            "activities[0] (blog-post).description: template error",
        ),
        (
            lambda d: d["activities"][0].update(description="{% for x in %}"),
            "activities[0] (blog-post).description: template error",
        ),
        (lambda d: d.update(version=2), "version: got 2"),
    ],
)
def test_invalid_playbook_names_file_entry_reason(tmp_path: Path, mutate, expected: str) -> None:
    data = default_data()
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(PlaybookError) as err:
        load_playbook(path)
    assert str(err.value).startswith(f"{path} is not valid")
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_missing_playbook_file_says_which_setting(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match="TMINUS_PLAYBOOK"):
        load_playbook(tmp_path / "missing.yaml")


def test_templates_are_sandboxed(tmp_path: Path) -> None:
    data = default_data()
    data["activities"][0]["description"] = "{{ launch.__class__.__mro__ }}"
    with pytest.raises(PlaybookError, match="template error"):
        load_playbook(write(tmp_path, data))


def test_edited_playbook_is_reloaded(tmp_path: Path) -> None:
    data = default_data()
    path = write(tmp_path, data)
    assert load_playbook(path).name == "default"
    data["name"] = "edited"
    path.write_text(yaml.safe_dump(data))
    import os

    os.utime(path, ns=(1, 10**18))
    assert load_playbook(path).name == "edited"


# --- hostile playbooks: refused within seconds, naming the file, the entry and the reason ---


@pytest.mark.parametrize(
    "template,reason",
    [
        ("{{ 1 // 0 }}", "division or modulo by zero"),
        ("{{ launch.title + 1 }}", "TypeError"),
        ("{{ 'x' * 10**9 }}", "longer than 65536 characters"),
        ("{{ 'x'.ljust(10**9) }}", "width 1000000000 is over 65536"),
        ("{{ 'x'|center(10**9) }}", "center width"),
        ("{{ '{:>999999999}'.format(1) }}", "format width"),
        ("{{ '%999999999s' % 'x' }}", "formatting with %"),
        ("{{ 9 ** 999999 }}", "a power larger than"),
        ("{{ range(100000)|join(',') }}", "joining more than 65536 items"),
        ("{% set s = 'a' * 60000 %}{{ s.replace('', s) }}", "replace() would be longer"),
        (
            "{% macro f(s, n) %}{{ f(s ~ s, n - 1) if n else s }}{% endmacro %}{{ f('ab', 40) }}",
            "joining with ~",
        ),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
            "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
            "adding would be longer",
        ),
        (
            "{% set x %}{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}{% endset %}",
            "writes more than",
        ),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "took longer than 1 s",
        ),
        ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "more than 65536"),
        ("{{ launch.model_dump_json(indent=100000) }}", "unsafe"),
        ("{{ lipsum(100000) }}", "'lipsum' is undefined"),
        ("{% set l = [] %}{{ l.append(1) }}", "unsafe"),
        ("{{" + "(" * 5000 + "1" + ")" * 5000 + "}}", "nests too deeply"),
    ],
)
def test_template_abuse_fails_when_the_playbook_loads(
    tmp_path: Path, template: str, reason: str
) -> None:
    data = default_data()
    data["activities"][0]["description"] = template
    path = write(tmp_path, data)
    started = time.monotonic()
    with pytest.raises(PlaybookError) as err:
        load_playbook(path)
    assert time.monotonic() - started < 5
    assert str(err.value).startswith(f"{path} is not valid")
    problem = err.value.problems[0]
    assert problem.startswith("activities[0] (blog-post).description: template error: "), problem
    assert reason in problem
    assert len(problem) < 500


def test_one_slow_template_does_not_blame_the_others(tmp_path: Path) -> None:
    data = default_data()
    slow = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    for act in data["activities"]:
        act["description"] = slow
    started = time.monotonic()
    with pytest.raises(PlaybookError) as err:
        load_playbook(write(tmp_path, data))
    assert time.monotonic() - started < 6  # one shared limit, not one per template
    assert err.value.problems[0].startswith("activities[0] (blog-post).description")
    assert "not checked: out of time" in err.value.problems[-1]


def test_a_playbook_yaml_bomb_is_refused(tmp_path: Path) -> None:
    from .test_request import billion_laughs

    path = tmp_path / "playbook.yaml"
    path.write_text(billion_laughs())
    with pytest.raises(PlaybookError, match="more than 20000 values"):
        load_playbook(path)


def test_a_playbook_in_another_encoding_is_named(tmp_path: Path) -> None:
    path = tmp_path / "playbook.yaml"
    path.write_bytes(default_playbook_path().read_bytes() + "\n# Café\n".encode("latin-1"))
    with pytest.raises(PlaybookError, match=r"byte 0xe9 is not UTF-8 text; save the file as UTF-8"):
        load_playbook(path)


def test_titles_gitlab_cannot_hold_are_refused(tmp_path: Path) -> None:
    data = default_data()
    # Fits the plain sample, not a launch whose title is as long as a launch file allows.
    data["activities"][0]["title"] = "Blog post " + "x" * 140
    with pytest.raises(PlaybookError) as err:
        load_playbook(write(tmp_path, data))
    (problem,) = err.value.problems
    assert problem.startswith("activities[0] (blog-post).title (with a launch whose fields are")
    assert "GitLab titles hold at most 255" in problem


@pytest.mark.parametrize(
    "mutate,expected",
    [
        (lambda d: d["activities"][0].update(lead_time_days=366), "lead_time_days: got 366"),
        (lambda d: d["activities"][0].update(lead_time_days=-61), "lead_time_days: got -61"),
        (lambda d: d["sister_issue"].update(lead_time_days=10**6), "sister_issue.lead_time_days"),
        (lambda d: d["activities"][0].update(labels=["a,b"]), "activities[0].labels[0]"),
        (lambda d: d.update(labels=["x" * 256]), "labels[0]"),
        (lambda d: d["activities"][0].update(description="x" * 20_001), "description"),
        (lambda d: d.update(activities=d["activities"] * 6), "activities: got"),
        (lambda d: d.update(name="two\nlines"), "name: got"),
    ],
)
def test_playbook_values_are_bounded(tmp_path: Path, mutate, expected: str) -> None:
    data = default_data()
    mutate(data)
    with pytest.raises(PlaybookError) as err:
        load_playbook(write(tmp_path, data))
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_ordinary_template_features_still_work(tmp_path: Path) -> None:
    from tminus.domain.playbook import render

    context = {"items": ["a", "b"], "n": 3, "day": date(2027, 3, 16)}
    template = (
        "{% for i in items %}{{ loop.index }}/{{ loop.length }} {{ i|upper }};{% endfor %}"
        " {{ items|join(', ') }} {{ '%03d'|format(n) }} {{ '{:%Y}'.format(day) }}"
        " {{ 'ab' * n }} {{ 'x'|center(5) }}|{{ items|map('upper')|join }}"
    )
    assert render(template, context) == "1/2 A;2/2 B; a, b 003 2027 ababab   x  |AB"


@pytest.mark.parametrize("name", ["file.yaml/playbook.yaml", "x" * 300])
def test_a_playbook_path_that_cannot_be_read_is_named(tmp_path: Path, name: str) -> None:
    (tmp_path / "file.yaml").write_text("name: x\n")
    path = tmp_path / name
    with pytest.raises(PlaybookError) as err:
        load_playbook(path)
    assert str(err.value).startswith(f"{path} is not valid")
    (problem,) = err.value.problems
    assert problem.startswith("cannot be read: "), problem


def test_default_public_comms_wait_for_review_and_legal_check() -> None:
    playbook = load_playbook()
    waits = {a.key: a.depends_on for a in playbook.activities if a.depends_on}
    assert waits == {
        key: ["marketing-review", "legal-review"]
        for key in ("social-promotion", "customer-comms", "dev-community-posts")
    }


def _with_dependencies(**deps: list[str]) -> dict:
    data = default_data()
    for act in data["activities"]:
        act.pop("depends_on", None)
        if act["key"] in deps:
            act["depends_on"] = deps[act["key"]]
    return data


@pytest.mark.parametrize(
    "deps,expected",
    [
        (
            {"blog-post": ["blog-psot"]},
            "activities[0] (blog-post).depends_on[0]: got 'blog-psot': no such activity",
        ),
        (
            {"blog-post": ["blog-post"]},
            "activities[0] (blog-post).depends_on[0]: an activity cannot depend on itself",
        ),
        (
            {"blog-post": ["docs-update", "docs-update"]},
            "activities[0] (blog-post).depends_on[1]: 'docs-update' is listed twice",
        ),
        (
            {"blog-post": ["sales-training"]},
            "'sales-training' is a calendar activity; only issue activities",
        ),
        (
            {"docs-check": ["docs-update"]},
            "(docs-check).depends_on[0]: it is a page_check activity",
        ),
        (
            {
                "blog-post": ["docs-update"],
                "docs-update": ["launch-video"],
                "launch-video": ["blog-post"],
            },
            "depends_on makes a cycle: blog-post -> docs-update -> launch-video -> blog-post; "
            "remove one",
        ),
        (
            {"social-promotion": ["blog-post"], "blog-post": ["social-promotion"]},
            "cycle: blog-post -> social-promotion -> blog-post",
        ),
    ],
)
def test_bad_dependencies_are_named_with_the_fix(
    tmp_path: Path, deps: dict[str, list[str]], expected: str
) -> None:
    path = write(tmp_path, _with_dependencies(**deps))
    with pytest.raises(PlaybookError) as err:
        load_playbook(path)
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_dependencies_without_a_cycle_load(tmp_path: Path) -> None:
    # A diamond (two paths to one dependency) is not a cycle.
    deps = {
        "social-promotion": ["blog-post", "docs-update"],
        "blog-post": ["marketing-review"],
        "docs-update": ["marketing-review"],
    }
    playbook = load_playbook(write(tmp_path, _with_dependencies(**deps)))
    assert playbook.activity("social-promotion").depends_on == ["blog-post", "docs-update"]
