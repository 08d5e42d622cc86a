"""The embedded default: a local Prefect server and the sandbox, as background processes.

``tminus up`` starts what is not running yet (and reuses what is), ``tminus down`` stops them,
``tminus status`` says what runs where. State, pid files and logs live under ``TMINUS_HOME``;
the Prefect server gets its own ``PREFECT_HOME`` there, so it never shares (and locks) the
SQLite database of another Prefect server on the machine.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tminus.errors import ServiceError, SettingsError
from tminus.settings import Settings


@dataclass(frozen=True)
class Service:
    name: str
    url: str
    health: str
    argv: list[str]
    env: dict[str, str]


def prefect_env(home: Path) -> dict[str, str]:
    """Environment for every Prefect process of the embedded default."""
    return {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    }


def services(settings: Settings) -> list[Service]:
    home = settings.home.resolve()
    out = []
    if "PREFECT_API_URL" not in os.environ:
        out.append(
            Service(
                name="prefect",
                url=settings.prefect_url,
                health=f"{settings.prefect_url}/api/health",
                argv=[
                    sys.executable,
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(settings.prefect_port),
                    "--analytics-off",
                ],
                env={
                    **prefect_env(home),
                    # The UI asks the browser to call this API; without it, port 4200.
                    "PREFECT_UI_API_URL": f"{settings.prefect_url}/api",
                    "PREFECT_SERVER_API_PORT": str(settings.prefect_port),
                },
            )
        )
    if settings.embedded:
        out.append(
            Service(
                name="sandbox",
                url=settings.sandbox_url,
                health=f"{settings.sandbox_url}/healthz",
                argv=sandbox_argv(settings),
                env={"TMINUS_HOME": str(home)},
            )
        )
    return out


def sandbox_argv(settings: Settings, port: int | None = None) -> list[str]:
    """The stand-ins' command line. They are their own dev-only distribution (``sandbox/``):
    run as a process, never imported."""
    if importlib.util.find_spec("tminus_sandbox") is None:
        raise SettingsError(
            "TMINUS_GITLAB_URL",
            [
                "not set, so tminus uses its local stand-ins, which are not installed: "
                "`make` installs them (pip install -e ./sandbox), or set TMINUS_GITLAB_URL "
                "and the other TMINUS_* settings to use the real systems"
            ],
        )
    data = settings.home.resolve() / "sandbox"
    port = port or settings.sandbox_port
    return [sys.executable, "-m", "tminus_sandbox", "--port", str(port), "--data", str(data)]


def receiver_service(settings: Settings) -> Service:
    """The GitLab webhook receiver, as a background service (``tminus serve`` / ``demo``)."""
    url = f"http://127.0.0.1:{settings.webhook_port}"
    return Service(
        name="webhook",
        url=url,
        health=f"{url}/healthz",
        argv=[sys.executable, "-m", "tminus", "webhook", "--port", str(settings.webhook_port)],
        env={"TMINUS_HOME": str(settings.home.resolve()), **_prefect_api_env(settings)},
    )


def runner_service(settings: Settings) -> Service:
    """``tminus serve`` itself in the background (``tminus demo``); healthy once the launch
    deployment is registered."""
    return Service(
        name="runner",
        url=settings.prefect_url,
        health="",
        argv=[sys.executable, "-m", "tminus", "serve", "--no-receiver"],
        env={"TMINUS_HOME": str(settings.home.resolve()), **_prefect_api_env(settings)},
    )


def _prefect_api_env(settings: Settings) -> dict[str, str]:
    if "PREFECT_API_URL" in os.environ:
        return {"PREFECT_API_URL": os.environ["PREFECT_API_URL"]}
    api = f"{settings.prefect_url}/api"
    return {**prefect_env(settings.home.resolve()), "PREFECT_API_URL": api}


def _healthy(url: str) -> bool:
    if not url:
        return False
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _pidfile(settings: Settings, name: str) -> Path:
    return settings.home.resolve() / "run" / f"{name}.pid"


def _alive(settings: Settings, name: str) -> bool:
    pidfile = _pidfile(settings, name)
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return False
    return True


def up(
    settings: Settings, timeout: float = 90, extra: list[Service] | None = None
) -> list[Service]:
    """Start the services that are not answering yet; wait until all answer."""
    home = settings.home.resolve()
    (home / "run").mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    wanted = services(settings) + (extra or [])
    for svc in wanted:
        if _healthy(svc.health) or (not svc.health and _alive(settings, svc.name)):
            continue
        # The child writes to its own copy of the descriptor; this process closes its own.
        with open(home / "logs" / f"{svc.name}.log", "ab") as log:
            proc = subprocess.Popen(
                svc.argv,
                env={**os.environ, **svc.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives this command; `tminus down` stops it
            )
        _pidfile(settings, svc.name).write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    for svc in wanted:
        while svc.health and not _healthy(svc.health):
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{svc.name} did not answer at {svc.health} within {timeout:.0f} s; "
                    f"see {home / 'logs' / (svc.name + '.log')}"
                )
            time.sleep(0.3)
    return wanted


def down(settings: Settings) -> list[str]:
    """Stop the services `up` started (by pid file). Returns the names stopped."""
    stopped = []
    for name in ("runner", "webhook", "sandbox", "prefect"):
        pidfile = _pidfile(settings, name)
        if not pidfile.exists():
            continue
        pid = int(pidfile.read_text().strip() or 0)
        try:
            os.killpg(pid, signal.SIGTERM)
            stopped.append(name)
        except (ProcessLookupError, PermissionError):
            pass
        pidfile.unlink(missing_ok=True)
    return stopped


def status(settings: Settings) -> dict[str, tuple[str, bool]]:
    out = {svc.name: (svc.url, _healthy(svc.health)) for svc in services(settings)}
    hook = receiver_service(settings)
    out["webhook"] = (hook.url, _healthy(hook.health))
    out["runner"] = ("tminus serve", _alive(settings, "runner"))
    return out
