"""Turn pydantic and YAML errors into messages that name the field, the value and the fix.

Launch files and playbooks are parsed by one bounded parser (:func:`parse_yaml_mapping`): at
most ``MAX_FILE_BYTES`` of UTF-8, at most ``MAX_YAML_NODES`` values once anchors (``&a``) and
aliases (``*a``) are expanded, so a "billion laughs" file is refused while it is parsed instead
of exhausting memory in whatever walks the data next. Messages print at most ``VALUE_CHARS``
characters of any value. Reading the file is not done here (the domain does no I/O):
``tminus.integrations.files`` reads at most ``MAX_FILE_BYTES + 1`` bytes and hands them over.
"""

from __future__ import annotations

import reprlib
from datetime import date, datetime
from typing import Any, NoReturn

import yaml
from pydantic import ValidationError
from yaml.composer import ComposerError

MAX_FILE_BYTES = 1_048_576
MAX_YAML_NODES = 20_000
VALUE_CHARS = 80
_KEY_CHARS = 40
_MSG_CHARS = 300

_HINTS: dict[str, str] = {
    "missing": "add it",
    "extra_forbidden": "remove it, or check its spelling",
    "date_from_datetime_parsing": "write the date as YYYY-MM-DD",
    "date_from_datetime_inexact": "write the date as YYYY-MM-DD",
    "date_parsing": "write the date as YYYY-MM-DD",
    "date_type": "write the date as YYYY-MM-DD",
    "url_parsing": "give a full URL such as https://docs.example.com/page",
    "url_scheme": "use an http:// or https:// URL",
    "url_type": "give a full URL such as https://docs.example.com/page",
    "string_pattern_mismatch": "",
    "too_short": "",
}

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxstring = VALUE_CHARS
_repr.maxother = VALUE_CHARS
for _name in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset"):
    setattr(_repr, _name, 6)


def clip(text: str, limit: int = VALUE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def show_value(value: Any) -> str:
    """A value as an error message prints it: bounded, whatever its size or shape."""
    try:
        if isinstance(value, str):
            if len(value) <= VALUE_CHARS:
                return repr(value)
            return f"{value[:VALUE_CHARS]!r}… ({len(value)} characters)"
        if isinstance(value, datetime | date):
            return value.isoformat()
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
            return f"an integer of {value.bit_length()} bits"
        text = _repr.repr(value)  # walks at most a few levels and items, never the whole value
    except Exception:  # a value whose repr fails is still named by its type
        text = f"a {type(value).__name__}"
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def _part(part: Any) -> str:
    text = str(part) if isinstance(part, str | int) else show_value(part)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= _KEY_CHARS else text[: _KEY_CHARS - 1] + "…"


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{_part(part)}" if out else _part(part)
    return out or "(top level)"


def describe_validation_error(exc: ValidationError) -> list[str]:
    """One line per problem: ``field: got VALUE: what is wrong; how to fix it``."""
    problems = []
    for err in exc.errors(include_url=False, include_context=False):
        loc = _loc(tuple(err["loc"]))
        kind = err["type"]
        msg = err["msg"]
        if kind.startswith("value_error") and msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        msg = clip(msg, _MSG_CHARS)
        hint = _HINTS.get(kind, "")
        if kind == "missing":
            line = f"{loc}: missing; {hint}"
        else:
            line = f"{loc}: got {show_value(err.get('input'))}: {msg}"
            if hint:
                line += f"; {hint}"
        problems.append(line)
    return problems


# --- the bounded YAML reader ------------------------------------------------------------


class _Refused(ComposerError):
    """Valid YAML that tminus will not expand: too many values, or a recursive alias."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting values as aliases expand them.

    Composing is where an alias is only a reference; the count is the size of the data once
    every alias is replaced by what it names, which is what later code would walk.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._count = 0
        self._sizes: dict[int, int] = {}  # id(node) -> values it expands to

    def _add(self, n: int, mark: Any) -> None:
        self._count += n
        if self._count > MAX_YAML_NODES:
            raise _Refused(
                None,
                None,
                f"more than {MAX_YAML_NODES} values once anchors and aliases are expanded; "
                "write the values out instead of repeating aliases (*name)",
                mark,
            )

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML stubs
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._sizes.get(id(target))
                if size is None:  # still being composed: the alias is inside its own anchor
                    raise _Refused(
                        None,
                        None,
                        f"alias *{event.anchor} refers to a value that contains it; "
                        "a launch file or playbook cannot be recursive",
                        event.start_mark,
                    )
                self._add(size, event.start_mark)
            return super().compose_node(parent, index)
        start = self._count
        self._add(1, self.peek_event().start_mark)  # type: ignore[no-untyped-call]
        node = super().compose_node(parent, index)
        self._sizes[id(node)] = self._count - start
        return node

    def construct_lenient_scalar(self, node: yaml.ScalarNode) -> Any:
        """Timestamps and integers YAML recognises but Python cannot hold (``2027-13-45``,
        ten thousand digits) stay text, so validation names the field instead of failing here."""
        method = {
            "tag:yaml.org,2002:timestamp": yaml.SafeLoader.construct_yaml_timestamp,
            "tag:yaml.org,2002:int": yaml.SafeLoader.construct_yaml_int,
        }[node.tag]
        try:
            return method(self, node)
        except (ValueError, OverflowError):
            return self.construct_scalar(node)


for _tag in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:int"):
    _BoundedLoader.add_constructor(_tag, _BoundedLoader.construct_lenient_scalar)


def parse_yaml_mapping(raw: bytes, source: str, error_cls: type[Exception]) -> dict[str, Any]:
    """Parse the bytes of a YAML file that must hold a mapping; errors name ``source`` (the
    file), the line and the fix.

    ``raw`` is what the reader got: at most ``MAX_FILE_BYTES + 1`` bytes, so that one byte more
    than allowed is seen here and refused.
    """

    def fail(problem: str) -> NoReturn:
        raise error_cls(source, [problem])

    if len(raw) > MAX_FILE_BYTES:
        fail(f"is larger than {MAX_FILE_BYTES // 1024} KiB; is it the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        fail(f"line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text; save the file as UTF-8")
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader, bounded
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = clip(getattr(exc, "problem", None) or str(exc), _MSG_CHARS)
        fail(
            f"{where}{problem}"
            if isinstance(exc, _Refused)
            else f"{where}not valid YAML ({problem})"
        )
    except RecursionError:
        fail("not valid YAML (nested too deeply); flatten the structure")
    except Exception as exc:  # PyYAML raises more than YAMLError on odd input
        fail(f"not valid YAML ({clip(f'{type(exc).__name__}: {exc}', _MSG_CHARS)})")
    if data is None:
        fail("is empty; it must hold fields as 'name: value' lines")
    if not isinstance(data, dict):
        fail(
            "expected a mapping of fields ('name: value' lines) at the top, "
            f"got {type(data).__name__}"
        )
    return data
