"""The deployments are defined once (deployments/catalogue.py): prefect.yaml is generated from
it, and `tminus serve` builds the same deployments from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
from prefect.cli.deploy._triggers import _initialize_deployment_triggers

from tminus.deployments.catalogue import PREFECT_VERSION, default_catalogue, prefect_yaml
from tminus.deployments.cli import main
from tminus.deployments.serve import build_deployments
from tminus.settings import load_settings

from .conftest import ROOT

PREFECT_YAML = ROOT / "prefect.yaml"


def test_committed_prefect_yaml_is_what_the_catalogue_generates() -> None:
    assert PREFECT_YAML.read_text(encoding="utf-8") == prefect_yaml(), (
        "prefect.yaml is out of date: run `tminus deployments --write prefect.yaml`"
    )


def test_prefect_yaml_keeps_the_worker_instructions() -> None:
    text = PREFECT_YAML.read_text(encoding="utf-8")
    assert "prefect work-pool create tminus --type process" in text
    assert "prefect worker start --pool tminus" in text


def _served() -> dict[str, Any]:
    # The defaults, as prefect.yaml holds them: no TMINUS_AUDIT_CRON, no TMINUS_TIMEZONE.
    return {d.name: d for d in build_deployments(load_settings({}))}


def test_prefect_yaml_and_serve_define_the_same_deployments() -> None:
    """What `prefect deploy` reads from prefect.yaml, parsed by Prefect's own CLI helpers,
    equals what `tminus serve` serves."""
    project = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    served = _served()
    assert [d["name"] for d in project["deployments"]] == list(served)
    for entry in project["deployments"]:
        deployment = served[entry["name"]]
        assert entry["description"] == deployment.description
        assert entry["tags"] == deployment.tags
        # Prefect writes the served flow's file relative to the working folder.
        path, name = entry["entrypoint"].split(":")
        served_path, served_name = deployment.entrypoint.split(":")
        assert name == served_name
        assert (ROOT / path).resolve() == Path(served_path).resolve()
        triggers = _initialize_deployment_triggers(entry["name"], entry.get("triggers", []))
        assert triggers == deployment.triggers
        schedules = [
            _schedule_config_to_deployment_schedule(s)["schedule"]
            for s in entry.get("schedules", [])
        ]
        assert schedules == [s.schedule for s in deployment.schedules]
    assert [d["name"] for d in project["deployments"]] == [s.name for s in default_catalogue()]


def test_serve_takes_the_audit_schedule_from_the_settings() -> None:
    settings = load_settings({"TMINUS_AUDIT_CRON": "30 7 * * *", "TMINUS_TIMEZONE": "Europe/Paris"})
    (schedule,) = {d.name: d for d in build_deployments(settings)}["audit"].schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 7 * * *", "Europe/Paris")


def test_prefect_version_is_the_installed_pin() -> None:
    import prefect

    assert prefect.__version__ == PREFECT_VERSION
    assert f'"prefect=={PREFECT_VERSION}"' in (ROOT / "pyproject.toml").read_text()


def test_cli_writes_and_checks_prefect_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "prefect.yaml"
    target.write_text("name: stale\n")
    assert main(["deployments", "--check", str(target)]) == 1
    assert "tminus deployments --write" in capsys.readouterr().err
    assert main(["deployments", "--write", str(target)]) == 0
    assert main(["deployments", "--check", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == prefect_yaml()
    assert main(["deployments"]) == 0
    assert capsys.readouterr().out == prefect_yaml()
    assert main(["deployments", "--check", str(tmp_path / "missing.yaml")]) == 2


def test_the_audit_runs_with_capped_malloc_arenas_under_workers_and_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers take the audit's process environment from prefect.yaml's job variables;
    `tminus serve`'s runner starts runs with its own environment, so serve sets it there."""
    project = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    audit = next(d for d in project["deployments"] if d["name"] == "audit")
    assert audit["work_pool"]["job_variables"]["env"] == {"MALLOC_ARENA_MAX": "2"}

    import prefect

    from tminus.deployments import serve

    seen: dict[str, str | None] = {}
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setattr(
        prefect, "serve", lambda *a, **k: seen.update(env=serve.os.environ.get("MALLOC_ARENA_MAX"))
    )
    serve.serve_all(load_settings({}))
    assert seen == {"env": "2"}
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")  # an operator's own setting is kept
    serve.serve_all(load_settings({}))
    assert seen == {"env": "8"}
