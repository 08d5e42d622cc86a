"""`tminus init` scaffolds a launches repository whose example is valid, and never overwrites."""

from __future__ import annotations

from pathlib import Path

import pytest

from tminus.deployments.cli import main
from tminus.domain.planner import check_request
from tminus.domain.repository import is_launch_path
from tminus.integrations.files import load_launch_file, load_playbook


def test_init_writes_a_valid_example_and_the_playbook(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "plans"
    assert main(["init", str(folder), "--project", "acme/launch-plans"]) == 0
    example = folder / "launches" / "example.yaml"
    assert is_launch_path(str(example.relative_to(folder)))
    playbook = load_playbook(folder / "playbook.yaml")
    check_request(load_launch_file(example), playbook, source=str(example))
    readme = (folder / "README.md").read_text()
    assert "TMINUS_LAUNCHES_REPO=acme/launch-plans" in readme
    assert "Merge request events" in readme and "Push events" in readme
    assert "acme/launch-plans" in capsys.readouterr().out


def test_init_refuses_a_folder_with_those_files_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "README.md").write_text("ours")
    assert main(["init", str(tmp_path)]) == 2
    assert (tmp_path / "README.md").read_text() == "ours"
    assert not (tmp_path / "launches").exists() and not (tmp_path / "playbook.yaml").exists()
    assert "README.md already exist" in capsys.readouterr().err
