"""A throwaway PostgreSQL cluster and a `prefect server start` on it, all on 127.0.0.1.

Shared by tests/test_e2e_postgres.py and benchmarks/launch_vs_script.py (``--prefect-db
postgres``); no pytest here, so a benchmark can import it. PostgreSQL comes from Debian's
`postgresql` package (binaries under /usr/lib/postgresql/*/bin). As root, the cluster runs as
the `postgres` user (PostgreSQL refuses root), from a folder that user owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tminus_sandbox.app import free_port

ROOT = Path(__file__).resolve().parent.parent
PREFECT = (sys.executable, "-m", "prefect")


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (initdb, pg_ctl, createdb), or None."""
    # On PATH (resolved: /usr/local/bin may link only some of them), then Debian's folders.
    found = [
        Path(p).resolve().parent for p in (shutil.which("initdb"), shutil.which("pg_ctl")) if p
    ]
    found += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for folder in found:
        if all((folder / program).exists() for program in ("initdb", "pg_ctl", "createdb")):
            return folder
    return None


@contextmanager
def postgres_cluster(bin_dir: Path, folder: Path | None = None) -> Iterator[str]:
    """A throwaway cluster on a free port of 127.0.0.1 with a database `prefect`; yields the
    SQLAlchemy URL for Prefect. Its files go in ``folder`` (a new temporary folder if None;
    as root always a new one, owned by `postgres`), removed at the end when temporary."""
    as_root = os.geteuid() == 0
    run_as: dict[str, Any] = {}
    temporary = as_root or folder is None
    if as_root:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError(
                "running as root needs the `postgres` user (Debian's postgresql package "
                "creates it): PostgreSQL refuses to run as root"
            ) from None
        base = Path(tempfile.mkdtemp(prefix="tminus-pg-"))
        os.chown(base, owner.pw_uid, owner.pw_gid)
        run_as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    else:
        base = folder if folder is not None else Path(tempfile.mkdtemp(prefix="tminus-pg-"))
    data, log = base / "data", base / "postgres.log"
    port = free_port()

    def run(*argv: str) -> None:
        done = subprocess.run(
            argv, cwd=base, capture_output=True, text=True, timeout=120, check=False, **run_as
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed:\n{done.stdout}\n{done.stderr}")

    run(
        str(bin_dir / "initdb"),
        "-D",
        str(data),
        "-U",
        "tminus",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C",
    )
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c max_connections=200 "
        "-c fsync=off -c synchronous_commit=off"
    )
    pg_ctl = str(bin_dir / "pg_ctl")
    run(pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
    try:
        run(
            str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "tminus", "prefect"
        )
        yield f"postgresql+asyncpg://tminus@127.0.0.1:{port}/prefect"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
        if temporary:
            shutil.rmtree(base, ignore_errors=True)


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A process in its own session (so ``stop`` ends its children too), output to ``log``."""
    with open(log, "wb") as out:  # the child has its own copy of the descriptor
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def prefect_server(
    database_url: str, env: dict[str, str], log: Path, timeout: float = 120
) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1 (a free port) with ``database_url``, the rest of
    its environment from ``env`` (PREFECT_HOME and the like); yields its API URL once
    /health answers, stops it at the end."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    proc = start(
        [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        {
            **env,
            "PREFECT_API_URL": api,
            "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
            "PREFECT_UI_API_URL": api,
        },
        log,
    )
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(api):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Prefect server on {database_url} did not come up:\n"
                    + log.read_text(errors="replace")[-3000:]
                )
            time.sleep(0.25)
        yield api
    finally:
        stop([proc])
