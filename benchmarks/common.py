"""What every benchmark prints and needs: the machine it ran on, a free loopback port."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> str:
    """CPUs (model, usable), load, OS, and the versions that matter: figures mean little
    without them, and other work on the machine skews them."""
    import gitlab
    import prefect

    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = f" ({line.split(':', 1)[1].strip()})"
                break
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"machine: {cores} CPUs{model}, {usable} usable, load average {load:.2f}; "
        f"{platform.machine()}, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, Prefect {prefect.__version__}, "
        f"python-gitlab {gitlab.__version__}"
    )


def exit_on_sigterm() -> None:
    """Turn SIGTERM (``timeout``, ``kill``) into SystemExit, so the servers a benchmark
    started are stopped by its ``finally`` and ``ExitStack`` callbacks, not left running."""
    import signal
    import sys

    def stop(signum: int, frame: object) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
