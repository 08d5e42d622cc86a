"""The audit caps glibc's malloc arenas (``tminus.integrations.malloc``); its effect on memory
is measured by ``benchmarks/audit_scale.py``."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CAP = "from tminus.integrations.malloc import cap_arenas; print(cap_arenas(2))"


def run(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CAP], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_the_arena_cap_is_set_on_glibc() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert run(env) == "True"


def test_an_operators_malloc_arena_max_is_kept() -> None:
    assert run({**os.environ, "MALLOC_ARENA_MAX": "4"}) == "False"
