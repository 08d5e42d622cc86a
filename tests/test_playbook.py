"""Playbooks: the default validates; a broken one fails naming the file, the entry, the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tminus.errors import PlaybookError
from tminus.playbook import Frequency, Kind, default_playbook_path, load_playbook
from tminus.request import Tier


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
