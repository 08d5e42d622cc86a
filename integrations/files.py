"""tminus's own files: launch files, playbooks (yours or the packaged default), the launches
folder.

This is the only module that opens them; the domain parses what it reads
(``tminus.domain.validation.parse_yaml_mapping`` and the ``parse_*`` functions built on it).
Every file is read by :func:`read_bounded`: at most ``MAX_FILE_BYTES + 1`` bytes, so a file too
large is refused without being read whole, and a file that cannot be read fails naming the file
and the fix, like a file that cannot be parsed.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from tminus.domain.playbook import Playbook, parse_playbook_file
from tminus.domain.release import is_launch_file_for, launch_file_names
from tminus.domain.request import LaunchRequest, parse_launch_file
from tminus.domain.validation import MAX_FILE_BYTES, parse_yaml_mapping
from tminus.errors import LaunchFileError, PlaybookError

DEFAULT_PLAYBOOK = "default.yaml"


def read_bounded(path: Path, error_cls: type[Exception]) -> bytes:
    """At most ``MAX_FILE_BYTES + 1`` bytes of ``path`` (the parser refuses the extra byte);
    errors name the file and the fix."""

    def fail(problem: str) -> NoReturn:
        raise error_cls(str(path), [problem])

    try:
        with path.open("rb") as handle:
            return handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        fail("file not found; check the path")
    except IsADirectoryError:
        fail("is a folder, not a file; give the path of a YAML file")
    except PermissionError:
        fail("cannot be read: permission denied; check the file's permissions")
    except OSError as exc:
        fail(f"cannot be read: {exc.strerror or exc}; give the path of a YAML file")


def read_yaml_mapping(path: Path, error_cls: type[Exception]) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file, the line and the fix."""
    return parse_yaml_mapping(read_bounded(path, error_cls), str(path), error_cls)


def load_launch_file(path: str | Path) -> LaunchRequest:
    """Read and validate a YAML launch file."""
    path = Path(path)
    return parse_launch_file(read_bounded(path, LaunchFileError), str(path))


# --- playbooks ---------------------------------------------------------------------------


def default_playbook_path() -> Path:
    """The packaged default playbook (``domain/playbooks/default.yaml``)."""
    return Path(str(resources.files("tminus.domain").joinpath("playbooks", DEFAULT_PLAYBOOK)))


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int) -> Playbook:
    # Keyed by modification time: an edited playbook is read again, an unchanged one is not
    # validated (and its templates trial-rendered) on every run.
    return parse_playbook_file(read_bounded(Path(path), PlaybookError), path)


def load_playbook(path: str | Path | None = None) -> Playbook:
    """Load and validate a playbook (the packaged default when ``path`` is None)."""
    resolved = Path(path) if path else default_playbook_path()
    try:
        mtime = resolved.stat().st_mtime_ns
    except FileNotFoundError:
        raise PlaybookError(str(resolved), ["file not found; check TMINUS_PLAYBOOK"]) from None
    except OSError:
        # A path that cannot even be looked at (a file used as a folder, a name too long): the
        # reader names the problem, as it does for a launch file.
        read_bounded(resolved, PlaybookError)
        raise
    return _load_cached(str(resolved), mtime)


# --- the launches folder -----------------------------------------------------------------


def find_launch_file(folder: Path | None, tag: str) -> Path | None:
    """A launch file for this release: ``<tag>.yaml`` or any file with ``release_tag: <tag>``.

    Only files inside ``folder`` (after resolving ``..`` and symlinks) are read, whatever the
    tag says: the release models refuse tags like ``../x``, and this holds even if they did not.
    """
    if folder is None or not folder.is_dir():
        return None
    root = folder.resolve()

    def inside(path: Path) -> bool:
        try:
            return path.resolve().is_relative_to(root) and path.is_file()
        except (OSError, ValueError):  # a loop of symlinks, a NUL in the name
            return False

    for name in launch_file_names(tag):
        path = folder / name
        if inside(path):
            return path
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        if not inside(path):
            continue
        # The one bounded reader: a YAML bomb in the folder is refused, never expanded.
        try:
            raw = read_yaml_mapping(path, LaunchFileError)
        except LaunchFileError:
            continue
        if is_launch_file_for(raw, tag):
            return path
    return None
