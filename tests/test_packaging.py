"""What `pip install .` installs: one import namespace, `tminus`, and no stand-ins."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from .conftest import ROOT

LEFT_OUT = (".git", ".venv", ".tminus", "build", "*.egg-info", "__pycache__", "tests", "sandbox")


def test_the_wheel_holds_only_the_tminus_namespace(tmp_path: Path) -> None:
    # Build from a copy, so no build/ folder of the checkout (stale or not) is involved.
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*LEFT_OUT))
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q"]
    subprocess.run(
        [*pip, "--wheel-dir", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    (wheel,) = tmp_path.glob("tminus-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/", 1)[0] for name in names} == {
        "tminus",
        f"tminus-{_version(wheel)}.dist-info",
    }
    layers = {n.split("/")[1] for n in names if n.startswith("tminus/") and n.count("/") > 1}
    assert layers == {"deployments", "flows", "tasks", "integrations", "domain"}
    assert "tminus/domain/playbooks/default.yaml" in names
    assert not [name for name in names if "sandbox" in name]  # the stand-ins stay out


def _version(wheel: Path) -> str:
    return wheel.name.split("-")[1]
