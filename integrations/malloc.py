"""glibc's malloc, for a long flow run that starts many short-lived threads (the audit).

glibc gives threads their own malloc arenas, up to 8 per core, and each keeps the memory it
freed for its own reuse. A flow that runs thread pools batch after batch spreads its
allocations over all of them, and the process's peak memory keeps growing with the number of
batches although the live objects do not (``benchmarks/audit_scale.py``). Capping the arenas,
as ``MALLOC_ARENA_MAX=2`` does at start, keeps it flat.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def cap_arenas(arenas: int = 2) -> bool:
    """From now on let glibc's malloc create at most ``arenas`` arenas in this process (arenas
    already made stay). True if it was set; False where the C library is not glibc, or where
    ``MALLOC_ARENA_MAX`` already says how many (the operator's choice is kept)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    # The process's own symbols (libc among them); find_library would run ldconfig each time.
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc only
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
