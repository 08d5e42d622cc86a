"""Fuzzing launch files and playbooks through the CLI: every input ends, fast, as a named error.

Hostile and broken inputs (YAML bombs, bad encodings, extreme dates, template abuse, random
mutations of ``examples/*.yaml`` and of the default playbook) go through the CLI
as a user would send them: ``plan FILE``, ``playbook FILE`` and, for what ``plan`` refuses,
``launch FILE`` with every system pointed at the session's sandbox. Each call must end within
10 s with exit 2 and a message naming the file and the field (or exit 0 when the input is in
fact valid): never a traceback, never exit 1, and ``launch`` must write nothing.

The CI default is small and fast (about 300 inputs, well under 30 s). To fuzz longer:

    TMINUS_FUZZ_PROFILE=deep .venv/bin/pytest tests/test_input_fuzz.py     # ~20x the inputs

or ``python benchmarks/input_fuzz.py`` for figures (inputs tried, exit codes, slowest input,
tracebacks). Profiles: ``tminus-fuzz-ci`` (default) and ``tminus-fuzz-deep``; they apply to
this module's tests only.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tminus.integrations.files import default_playbook_path

from .conftest import EXAMPLES, SandboxClient, sandbox_env

CALL_SECONDS = 10.0

settings.register_profile(
    "tminus-fuzz-ci",
    max_examples=40,
    deadline=timedelta(seconds=3 * CALL_SECONDS),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
    database=None,
)
settings.register_profile(
    "tminus-fuzz-deep",
    max_examples=800,
    deadline=timedelta(seconds=3 * CALL_SECONDS),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# The CLI runs in a worker thread that can outlive its example (an input that timed out) and
# touch the global `random` module (tempfile names, Jinja) while Hypothesis draws the next
# example, which Hypothesis then reports as randomness inside a strategy. The strategies here
# draw everything through Hypothesis; only that report is ignored, in this module only.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)

_PROFILE_NAME = os.environ.get("TMINUS_FUZZ_PROFILE", "ci")
PROFILE = settings.get_profile(
    {"ci": "tminus-fuzz-ci", "deep": "tminus-fuzz-deep"}.get(_PROFILE_NAME, _PROFILE_NAME)
)


def fuzz(scale: float = 1.0) -> settings:
    """This module's profile, with ``scale`` times its examples."""
    return settings(PROFILE, max_examples=max(1, int(PROFILE.max_examples * scale)))


EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))
EXAMPLE_TEXTS = [p.read_text(encoding="utf-8") for p in EXAMPLE_FILES]
PLAYBOOK_TEXT = default_playbook_path().read_text(encoding="utf-8")


# --- running the CLI ---------------------------------------------------------------------


@dataclass
class Outcome:
    args: list[str]
    code: int | None  # None: it raised, or did not end in time
    out: str
    err: str
    seconds: float
    crash: str | None = None  # the traceback, if main() raised

    def ok(self) -> bool:
        return self.crash is None and self.code in (0, 2) and self.seconds < CALL_SECONDS


_io_lock = threading.Lock()


def run_cli(args: list[str], env: dict[str, str] | None = None) -> Outcome:
    """The CLI's ``main(args)`` in a worker thread, so an input that hangs fails the test
    after CALL_SECONDS instead of hanging it."""
    from tminus.deployments.cli import main

    out, err = io.StringIO(), io.StringIO()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["code"] = main(args)
        except SystemExit as exc:  # argparse
            box["code"] = exc.code
        except BaseException:
            box["crash"] = traceback.format_exc()

    with (
        _io_lock,
        patched_env(env or {}),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        started = time.monotonic()
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        thread.join(CALL_SECONDS)
        seconds = time.monotonic() - started
    if thread.is_alive():
        box["crash"] = f"did not end within {CALL_SECONDS:g} s"
    return Outcome(args, box.get("code"), out.getvalue(), err.getvalue(), seconds, box.get("crash"))


@contextlib.contextmanager
def patched_env(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check(outcome: Outcome, path: Path) -> None:
    """The promise: exit 0, or exit 2 naming the file and what is wrong; fast; no traceback."""
    where = f"tminus {' '.join(outcome.args)}"
    assert outcome.crash is None, f"{where} crashed:\n{outcome.crash}"
    assert outcome.seconds < CALL_SECONDS, f"{where} took {outcome.seconds:.1f} s"
    assert outcome.code in (0, 2), f"{where} exited {outcome.code}:\n{outcome.err[-2000:]}"
    assert "Traceback" not in outcome.err
    if outcome.code == 2:
        assert "is not valid:\n  - " in outcome.err, outcome.err[-2000:]
        assert "Nothing was created or changed." in outcome.err
        assert len(outcome.err) < 200_000  # values are clipped, not printed whole


_names = itertools.count()


def write(folder: Path, content: str | bytes, suffix: str = ".yaml") -> Path:
    # A fresh name each time: the playbook cache is keyed by path and modification time.
    path = folder / f"input-{next(_names)}{suffix}"
    path.write_bytes(
        content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
    )
    return path


# --- what to send ------------------------------------------------------------------------


@st.composite
def yaml_bombs(draw: st.DrawFn) -> str:
    """Anchors whose aliases multiply: lists, mappings, merge keys, or one big anchor reused."""
    kind = draw(st.sampled_from(["list", "map", "merge", "wide"]))
    levels = draw(st.integers(3, 12))
    width = draw(st.integers(2, 12))
    lines = []
    if kind == "wide":
        big = "x" * draw(st.integers(1_000, 60_000))
        lines.append(f"a0: &a0 {big}")
        lines.append("a1: [" + ", ".join(["*a0"] * draw(st.integers(100, 5_000))) + "]")
        top = "a1"
    else:
        lines.append('a0: &a0 ["lol", "lol"]' if kind == "list" else "a0: &a0 {k: lol}")
        for i in range(1, levels):
            if kind == "list":
                lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
            elif kind == "map":
                refs = ", ".join(f"k{j}: *a{i - 1}" for j in range(width))
                lines.append(f"a{i}: &a{i} {{{refs}}}")
            else:
                lines.append(f"a{i}: &a{i} {{<<: *a{i - 1}, k{i}: [*a{i - 1}, *a{i - 1}]}}")
        top = f"a{levels - 1}"
    field = draw(st.sampled_from(["slug", "title", "labels", "features", "team", "unknown"]))
    return "\n".join(lines) + f"\n{field}: *{top}\n"


@st.composite
def bad_encodings(draw: st.DrawFn, texts: list[str]) -> bytes:
    text = draw(st.sampled_from(texts))
    how = draw(st.sampled_from(["latin-1", "utf-16", "cp1252", "insert", "random", "bom"]))
    if how == "random":
        return draw(st.binary(min_size=0, max_size=4096))
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode("utf-8")
    if how == "insert":
        raw = text.encode("utf-8")
        at = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xe9", b"\x80\x80", b"\xed\xa0\x80"]))
        return raw[:at] + junk + raw[at:]
    accented = text.replace("title: ", "title: Café ", 1)
    return accented.encode(how, errors="replace")


DATE_TEXT = st.one_of(
    st.dates().map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "0001-01-01",
            "9999-12-31",
            "1999-12-31",
            "2101-01-01",
            "2000-01-01",
            "2100-12-31",
            "2027-02-30",
            "2027-13-01",
            "0000-01-01",
            "2027-1-1",
            "2027-03-16T10:00:00",
            "2027-03-16 10:00:00+02:00",
            "99999-01-01",
            "-2027-03-16",
            "1e309",
            "0",
            "-1",
            "253402300800",
            "0x7fffffffffffffff",
            '"2027-03-16"',
            "[2027, 3, 16]",
            "{year: 2027}",
            "~",
            "!!timestamp 2027-03-16",
            "!!binary aGVsbG8=",
        ]
    ),
    st.integers().map(str),
)


@st.composite
def extreme_dates(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(EXAMPLE_TEXTS))
    lines = [ln for ln in text.splitlines() if not ln.startswith("launch_date:")]
    return "\n".join([*lines, f"launch_date: {draw(DATE_TEXT)}"]) + "\n"


BIG = st.sampled_from(["10**9", "999999999", "2**62", "65537", "100000", "10**100"])
ABUSE_SNIPPETS = st.one_of(
    st.builds("{{{{ 'x' * {} }}}}".format, BIG),
    st.builds("{{{{ 'x'.ljust({}) }}}}".format, BIG),
    st.builds("{{{{ 'x'|center({}) }}}}".format, BIG),
    st.builds("{{{{ 'x'|indent({}) }}}}".format, BIG),
    st.builds("{{{{ '{{:>{}}}'.format(1) }}}}".format, BIG),
    st.builds("{{{{ '%{}s' % 'x' }}}}".format, BIG),
    st.builds("{{{{ '%{}s'|format('x') }}}}".format, BIG),
    st.builds("{{{{ 9 ** {} }}}}".format, BIG),
    st.builds("{{{{ [1]|batch({}, 0)|list }}}}".format, BIG),
    st.builds("{{{{ (1).to_bytes({}, 'big') }}}}".format, BIG),
    st.builds("{{{{ range({})|join(',') }}}}".format, BIG),
    st.builds(
        "{{% macro f(s, n) %}}{{{{ f(s ~ s, n - 1) if n else s }}}}{{% endmacro %}}"
        "{{{{ f('ab', {}) }}}}".format,
        st.integers(1, 80),
    ),
    st.builds(
        "{{% macro f(n) %}}{{% if n %}}{{{{ f(n - 1) }}}}{{{{ f(n - 1) }}}}{{% endif %}}x"
        "{{% endmacro %}}{{{{ f({}) }}}}".format,
        st.integers(1, 40),
    ),
    st.builds(
        "{{% set ns = namespace(s='ab') %}}{{% for i in range({}) %}}{{% set ns.s = ns.s {} ns.s"
        " %}}{{% endfor %}}{{{{ ns.s|length }}}}".format,
        st.integers(1, 80),
        st.sampled_from(["~", "+"]),
    ),
    st.builds(
        "{{% for i in range({}) %}}{{% for j in range({}) %}}{}{{% endfor %}}{{% endfor %}}".format,
        st.integers(0, 100_000),
        st.integers(0, 100_000),
        st.sampled_from(["", "x", "{{ i }}"]),
    ),
    st.builds(
        "{{% set x %}}{{% for i in range({}) %}}{{{{ 'y' * 1000 }}}}{{% endfor %}}{{% endset %}}"
        "{{{{ x|length }}}}".format,
        st.integers(0, 100_000),
    ),
    st.sampled_from(
        [
            "{{ 1 // 0 }}",
            "{{ 1 % 0 }}",
            "{{ launch.title + 1 }}",
            "{{ launch.nope }}",
            "{{ nope }}",
            "{{ launch.__class__.__mro__ }}",
            "{{ launch.model_dump_json(indent=100000) }}",
            "{{ lipsum(100000) }}",
            "{% set l = [] %}{{ l.append(1) }}",
            "{{ 'x'|attr('__class__') }}",
            "{% include 'x' %}",
            "{% extends 'x' %}",
            "{% for %}",
            "{{ ",
            "{% if %}",
            "{{ due.replace(year=99999) }}",
            "{{ due.strftime('%Y' * 30000) }}",
            "{{ (launch.title * 500)|wordwrap(1, wrapstring=launch.title * 500) }}",
            "{% set s = 'a' * 60000 %}{{ s.replace('', s) }}",
            "{{ ('\t' * 60000).expandtabs(60000) }}",
            "{{" + "(" * 3000 + "1" + ")" * 3000 + "}}",
            "{{ launch.features|map(attribute='name')|join(', ') }}",
            "{{ launch.title|upper }} due {{ launch.launch_date }}",
        ]
    ),
)
TEMPLATE_FIELDS = [
    ("tracking_issue", "title"),
    ("tracking_issue", "description"),
    ("sister_issue", "title"),
    ("sister_issue", "description"),
    ("activities", "title"),
    ("activities", "description"),
    ("activities", "checklist"),
]


@st.composite
def abusive_playbooks(draw: st.DrawFn) -> str:
    data = yaml.safe_load(PLAYBOOK_TEXT)
    for _ in range(draw(st.integers(1, 3))):
        section, field = draw(st.sampled_from(TEMPLATE_FIELDS))
        template = draw(ABUSE_SNIPPETS)
        if section == "activities":
            act = draw(st.sampled_from(data["activities"]))
            if field == "checklist":
                act["checklist"] = [*act.get("checklist", []), template]
            else:
                act[field] = template
        else:
            data[section][field] = template
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


# Values a mutation puts in place of a field: wrong types, extremes, hostile text.
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.sampled_from(
        [
            "",
            " ",
            "../../etc",
            "group/../../etc",
            "/group/project",
            "-group/x",
            "group/x.git",
            "a" * 10_000,
            "x\x00y",
            "line\nbreak",
            "{{ 1 // 0 }}",
            "%s%s%s",
            "@" * 300,
            "L4",
            "L1",
            "https://",
            "javascript:alert(1)",
            "http://[::1",
            "é" * 300,
        ]
    ),
)
LEAVES = st.one_of(
    HOSTILE_TEXT,
    st.integers(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.dates(),
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=20,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += _paths(value, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, texts: list[str]) -> str:
    """A valid file with a few random edits: of its data (replace, delete, add), or of its text
    (characters inserted, deleted or swapped)."""
    text = draw(st.sampled_from(texts))
    if draw(st.booleans()):
        chars = list(text)
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, max(len(chars) - 1, 0)))
            op = draw(st.sampled_from(["insert", "delete", "replace"]))
            char = draw(
                st.sampled_from(
                    [
                        ":",
                        "-",
                        " ",
                        "\n",
                        "'",
                        '"',
                        "[",
                        "{",
                        "&",
                        "*",
                        "!",
                        "%",
                        "#",
                        "\t",
                        "x",
                        "é",
                    ]
                )
            )
            if op == "insert":
                chars.insert(at, char)
            elif chars and op == "delete":
                del chars[at]
            elif chars:
                chars[at] = char
        return "".join(chars)
    data = yaml.safe_load(text)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(data)))
        if not path:
            continue
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if op == "replace":
            parent[path[-1]] = draw(VALUES)
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(VALUES)
        else:
            parent.append(draw(VALUES))
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


LAUNCH_INPUTS = st.one_of(
    yaml_bombs(),
    bad_encodings(EXAMPLE_TEXTS),
    extreme_dates(),
    mutated(EXAMPLE_TEXTS),
)
PLAYBOOK_INPUTS = st.one_of(
    yaml_bombs(),
    bad_encodings([PLAYBOOK_TEXT]),
    abusive_playbooks(),
    mutated([PLAYBOOK_TEXT]),
)


# --- the tests -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def quiet_env() -> Iterator[None]:
    """No TMINUS_* setting from the caller's shell: the packaged playbook, local stand-ins."""
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("TMINUS_"):
                mp.delenv(key)
        yield


def plan_and_launch(path: Path, sandbox: SandboxClient | None, env: dict[str, str]) -> Outcome:
    """``plan FILE``; when plan refuses it, ``launch FILE`` too, which must write nothing."""
    planned = run_cli(["plan", str(path)], env)
    check(planned, path)
    if planned.code == 2:
        assert str(path) in planned.err or "playbook" in planned.err
        if sandbox is not None:
            sandbox.clear_log()
            launched = run_cli(["launch", str(path)], {**env, **sandbox_env(sandbox.url)})
            check(launched, path)
            assert launched.code == 2
            assert sandbox.writes() == []
    return planned


@fuzz(scale=1.0)
@given(content=yaml_bombs())
def test_yaml_bombs_are_refused(folder: Path, quiet_env: None, content: str) -> None:
    path = write(folder, content)
    outcome = plan_and_launch(path, None, {})
    assert outcome.code == 2
    assert (
        "values once anchors and aliases are expanded" in outcome.err or "not valid" in outcome.err
    )
    check(run_cli(["playbook", str(path)]), path)


@fuzz(scale=1.0)
@given(content=bad_encodings(EXAMPLE_TEXTS))
def test_bad_encodings_are_refused(folder: Path, quiet_env: None, content: bytes) -> None:
    path = write(folder, content)
    outcome = plan_and_launch(path, None, {})
    if outcome.code == 2:
        assert str(path) in outcome.err


@fuzz(scale=1.5)
@given(content=extreme_dates())
def test_extreme_dates_are_refused_before_anything_is_written(
    folder: Path, quiet_env: None, sandbox_server: SandboxClient, content: str
) -> None:
    path = write(folder, content)
    outcome = plan_and_launch(path, sandbox_server, {})
    if outcome.code == 2:
        assert "launch_date" in outcome.err
    else:
        day = yaml.safe_load(content)["launch_date"]
        assert str(day) >= "2000-01-01" and str(day) <= "2100-12-31"


@fuzz(scale=2.0)
@given(content=mutated(EXAMPLE_TEXTS))
def test_mutated_launch_files(
    folder: Path, quiet_env: None, sandbox_server: SandboxClient, content: str
) -> None:
    plan_and_launch(write(folder, content), sandbox_server, {})


@fuzz(scale=1.0)
@given(content=abusive_playbooks())
def test_template_abuse_is_refused_when_the_playbook_loads(
    folder: Path, quiet_env: None, content: str
) -> None:
    path = write(folder, content)
    outcome = run_cli(["playbook", str(path)])
    check(outcome, path)
    if outcome.code == 2:
        assert "template error" in outcome.err or "GitLab titles hold" in outcome.err
    else:  # the templates that passed the trial must also plan every example, or fail named
        for example in EXAMPLE_FILES:
            check(run_cli(["plan", str(example)], {"TMINUS_PLAYBOOK": str(path)}), path)


@fuzz(scale=1.5)
@given(content=PLAYBOOK_INPUTS)
def test_mutated_playbooks(folder: Path, quiet_env: None, content: str | bytes) -> None:
    path = write(folder, content)
    outcome = run_cli(["playbook", str(path)])
    check(outcome, path)
    if outcome.code == 0:
        for example in EXAMPLE_FILES:
            check(run_cli(["plan", str(example)], {"TMINUS_PLAYBOOK": str(path)}), path)
