"""Turn pydantic and YAML errors into messages that name the field, the value and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

_HINTS: dict[str, str] = {
    "missing": "add it",
    "extra_forbidden": "remove it, or check its spelling",
    "date_from_datetime_parsing": "write the date as YYYY-MM-DD",
    "date_parsing": "write the date as YYYY-MM-DD",
    "date_type": "write the date as YYYY-MM-DD",
    "url_parsing": "give a full URL such as https://docs.example.com/page",
    "url_scheme": "use an http:// or https:// URL",
    "url_type": "give a full URL such as https://docs.example.com/page",
    "string_pattern_mismatch": "",
    "too_short": "",
}


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def describe_validation_error(exc: ValidationError) -> list[str]:
    """One line per problem: ``field: got VALUE: what is wrong; how to fix it``."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = _loc(tuple(err["loc"]))
        kind = err["type"]
        msg = err["msg"]
        if kind.startswith("value_error") and msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        hint = _HINTS.get(kind, "")
        if kind == "missing":
            line = f"{loc}: missing; {hint}"
        else:
            line = f"{loc}: got {_value(err.get('input'))}: {msg}"
            if hint:
                line += f"; {hint}"
        problems.append(line)
    return problems


def read_yaml_mapping(path: Path, error_cls: type[Exception]) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error_cls(str(path), ["file not found"]) from None
    except OSError as exc:
        raise error_cls(str(path), [f"cannot be read: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise error_cls(str(path), [f"{where}not valid YAML ({problem})"]) from None
    if not isinstance(data, dict):
        raise error_cls(
            str(path), [f"expected a mapping of fields at the top, got {type(data).__name__}"]
        )
    return data
