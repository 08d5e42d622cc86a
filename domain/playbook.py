"""The playbook: which activities each tier gets, when, by whom, and what their issues say.

The default (``domain/playbooks/default.yaml``) is the activity matrix of the launch handbooks;
a company points ``TMINUS_PLAYBOOK`` at its own copy. Loading validates everything, including a
trial render of every template, so a broken playbook fails before a launch touches anything.
"""

from __future__ import annotations

import functools
import inspect
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date
from enum import Enum
from functools import lru_cache
from typing import Annotated, Any

from jinja2 import (
    StrictUndefined,
    Template,
    TemplateError,
    TemplateSyntaxError,
    nodes,
    pass_context,
)
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from markupsafe import EscapeFormatter, Markup
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from tminus.domain.answers import PLACEHOLDER, KitField
from tminus.domain.plan import LATE_WORK
from tminus.domain.request import SLUG_PATTERN, Feature, Label, LaunchRequest, Line, Tier
from tminus.domain.retro import metrics_table
from tminus.domain.tiering import TierScoring
from tminus.domain.validation import (
    clip,
    describe_validation_error,
    parse_yaml_mapping,
)
from tminus.errors import PlaybookError


class Frequency(str, Enum):
    always = "always"
    sometimes = "sometimes"


class Kind(str, Enum):
    """What an activity becomes."""

    issue = "issue"
    calendar = "calendar"
    page_check = "page_check"
    notification = "notification"


# The page-check activities (``kind: page_check``) tminus knows how to run, by key: the default
# playbook defines them (``domain/playbooks/default.yaml``), and a company's copy must keep
# these keys for its page checks to run (``tminus.domain.pages`` decides from them).
DOCS_CHECK = "docs-check"  # each priority feature's docs pages
FEATURES_CHECK = "features-page-check"  # the /features page and its compare view

Slug = Annotated[str, Field(pattern=SLUG_PATTERN)]
# Template sources; what they render to is bounded when they are rendered.
TEMPLATE_MAX = 20_000
TitleTemplate = Annotated[str, Field(min_length=1, max_length=1_000)]
BodyTemplate = Annotated[str, Field(max_length=TEMPLATE_MAX)]
ItemTemplate = Annotated[str, Field(min_length=1, max_length=1_000)]
Item = Annotated[Line, Field(min_length=1, max_length=500)]
# Due dates are launch day minus the lead time: a year either way of the launch-date window.
LEAD_DAYS_MIN = -60
LEAD_DAYS_MAX = 365


class Activity(BaseModel):
    """One row of the activity matrix."""

    model_config = ConfigDict(extra="forbid")

    key: Slug = Field(description="Stable id; part of every issue and event key.")
    title: TitleTemplate = Field(min_length=3)
    tiers: dict[Tier, Frequency] = Field(
        description="Per tier: always, or sometimes (only when the launch switches it on). "
        "A tier not listed never gets the activity."
    )
    lead_time_days: int = Field(
        ge=LEAD_DAYS_MIN,
        le=LEAD_DAYS_MAX,
        description="Days before launch day the activity is due (0 = launch day).",
    )
    owner_role: Slug = Field(description="Role that does the work; a launch maps roles to people.")
    kind: Kind = Kind.issue
    labels: list[Label] = Field(default=[], max_length=20)
    description: BodyTemplate = Field(default="", description="Issue body template (Jinja2).")
    checklist: list[ItemTemplate] = Field(
        default=[], max_length=50, description="Checklist item templates."
    )
    depends_on: list[Slug] = Field(
        default=[],
        max_length=20,
        description="Keys of the issue activities this one waits for; on a tier that does not "
        "plan one of them, that dependency is dropped.",
    )
    invite_sales: bool = Field(
        default=False,
        description="A calendar activity whose event invites the sales channel "
        "(TMINUS_SALES_CHANNEL_EMAIL), e.g. the sales training.",
    )

    @model_validator(mode="after")
    def _has_tiers(self) -> Activity:
        if not self.tiers:
            raise ValueError("tiers is empty; list at least one of L1, L2, L3")
        return self

    def frequency(self, tier: Tier) -> Frequency | None:
        return self.tiers.get(tier)


class TrackingIssue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: TitleTemplate
    description: BodyTemplate


class SisterIssue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: TitleTemplate
    description: BodyTemplate
    engineering_questions: list[Item] = Field(min_length=1, max_length=50)
    marketing_questions: list[Item] = Field(min_length=1, max_length=50)
    labels: list[Label] = Field(default=[], max_length=20)
    lead_time_days: int = Field(
        default=35,
        ge=LEAD_DAYS_MIN,
        le=LEAD_DAYS_MAX,
        description="Days before launch day the answers are due.",
    )
    kit: dict[KitField, Item] = Field(
        default={},
        description="Sales kit field -> the question whose answer fills it when the launch "
        "file leaves the field empty.",
    )

    @model_validator(mode="after")
    def _kit_questions(self) -> SisterIssue:
        asked = {*self.engineering_questions, *self.marketing_questions}
        for field, question in self.kit.items():
            if question not in asked:
                raise ValueError(f"kit.{field}: {question!r} is not one of the questions")
        return self

    @property
    def questions(self) -> list[str]:
        return [*self.engineering_questions, *self.marketing_questions]


class Playbook(BaseModel):
    """A validated playbook."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=1)
    name: Annotated[Line, Field(min_length=1, max_length=100)] = "default"
    roles: dict[Slug, Annotated[Line, Field(min_length=1, max_length=100)]] = Field(
        max_length=50, description="Role key -> human name (e.g. docs: Docs team)."
    )
    approval_tiers: list[Tier] = Field(
        default=[Tier.L1], description="Tiers whose sales notification waits for a PMM's approval."
    )
    labels: list[Label] = Field(
        default=[], max_length=20, description="Labels put on every launch issue."
    )
    release_checklist: list[Item] = Field(min_length=1, max_length=50)
    tracking_issue: TrackingIssue
    sister_issue: SisterIssue
    activities: list[Activity] = Field(min_length=1, max_length=100)
    tier_recommendation: TierScoring = Field(
        default=TierScoring(),
        description="How the tier questionnaire's answers become a recommended tier.",
    )
    _source: str = PrivateAttr(default="playbook")

    @property
    def source(self) -> str:
        """Where the playbook was read from, for messages about it."""
        return self._source

    @model_validator(mode="after")
    def _consistent(self) -> Playbook:
        seen: set[str] = set()
        for i, act in enumerate(self.activities):
            if act.key in seen:
                raise ValueError(
                    f"activities[{i}] ({act.key}): key is used twice; keys must be unique"
                )
            seen.add(act.key)
            if act.owner_role not in self.roles:
                raise ValueError(
                    f"activities[{i}] ({act.key}): owner_role {act.owner_role!r} is not in roles "
                    f"({', '.join(sorted(self.roles))}); add it to roles or fix the spelling"
                )
        return self

    @model_validator(mode="after")
    def _dependencies(self) -> Playbook:
        """depends_on names issue activities of this playbook, once each, and makes no cycle."""
        acts = {a.key: a for a in self.activities}
        for i, act in enumerate(self.activities):
            at = f"activities[{i}] ({act.key}).depends_on"
            for j, dep in enumerate(act.depends_on):
                if dep == act.key:
                    raise ValueError(f"{at}[{j}]: an activity cannot depend on itself; remove it")
                if dep not in acts:
                    raise ValueError(
                        f"{at}[{j}]: got {dep!r}: no such activity; activities: "
                        f"{clip(', '.join(acts), 300)}"
                    )
                if dep in act.depends_on[:j]:
                    raise ValueError(f"{at}[{j}]: {dep!r} is listed twice; remove one")
                for what, other in (("it", act), (repr(dep), acts[dep])):
                    if other.kind is not Kind.issue:
                        raise ValueError(
                            f"{at}[{j}]: {what} is a {other.kind.value} activity; only issue "
                            "activities can wait for one another (their issues show it)"
                        )
        cycle = _cycle({a.key: a.depends_on for a in self.activities})
        if cycle:
            raise ValueError(
                f"depends_on makes a cycle: {' -> '.join(cycle)}; remove one of these dependencies"
            )
        return self

    def activity(self, key: str) -> Activity:
        for act in self.activities:
            if act.key == key:
                return act
        raise KeyError(key)

    def sometimes_keys(self, tier: Tier) -> list[str]:
        return [a.key for a in self.activities if a.frequency(tier) is Frequency.sometimes]


def _cycle(edges: dict[str, list[str]]) -> list[str]:
    """One dependency cycle as a path that ends where it starts (``a -> b -> a``), or []."""
    done: set[str] = set()
    for start in edges:
        if start in done:
            continue
        path: list[str] = []
        stack = [(start, iter(edges[start]))]
        on_path = {start}
        path.append(start)
        while stack:
            node, deps = stack[-1]
            dep = next(deps, None)
            if dep is None:
                stack.pop()
                on_path.discard(path.pop())
                done.add(node)
            elif dep in on_path:
                return [*path[path.index(dep) :], dep]
            elif dep not in done and dep in edges:
                stack.append((dep, iter(edges[dep])))
                on_path.add(dep)
                path.append(dep)
    return []


# --- templates: sandboxed, and bounded in time and size ---------------------------------
#
# A playbook is data someone edits, so its templates run in Jinja's immutable sandbox, and on
# top of it every way a template can take time or memory is bounded: loops and calls check a
# deadline; repeating (``*``), powers, ``%``/``format`` widths, ``~``/``+``, string methods
# and filters refuse results longer than TEXT_MAX before building them; macro and block
# bodies count what they write; the output is capped per use (GitLab titles hold 255
# characters). Whatever fails, a render fails as a PlaybookError naming the entry.

RENDER_SECONDS = 1.0  # one template
CHECK_SECONDS = 3.0  # every template of a playbook, or of a plan
TEXT_MAX = 65_536  # one rendered description, and any value a template builds
TRACKING_MAX = 262_144  # the tracking issue's description (it carries the whole checklist)
ITEM_MAX = 1_000  # one checklist item
TITLE_MAX = 255  # GitLab issue titles
_WORK_MAX = 1_048_576  # characters one render may write, macro and block bodies included
_INT_BITS_MAX = 4_096
_ARG_INT_MAX = TEXT_MAX


class RenderLimit(Exception):
    """A template went over one of the renderer's bounds."""


class _Budget:
    """What one render may still spend: time, and characters written anywhere."""

    __slots__ = ("deadline", "seconds", "work")

    def __init__(self, seconds: float, deadline: float | None = None) -> None:
        self.seconds = seconds
        own = time.monotonic() + seconds
        self.deadline = own if deadline is None else min(own, deadline)
        self.work = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderLimit(f"took longer than {self.seconds:g} s; simplify the template")

    def spend(self, chars: int) -> None:
        self.work += chars
        if self.work > _WORK_MAX:
            raise RenderLimit(f"writes more than {_WORK_MAX} characters")
        self.tick()


_budget: ContextVar[_Budget | None] = ContextVar("tminus_render_budget", default=None)
_deadline: ContextVar[float | None] = ContextVar("tminus_render_deadline", default=None)


def _current() -> _Budget:
    # Outside a render (Jinja folds constants while compiling) a fresh budget applies.
    return _budget.get() or _Budget(RENDER_SECONDS)


@contextmanager
def time_limit(seconds: float = CHECK_SECONDS) -> Iterator[None]:
    """Renders inside share one deadline, so many templates cannot take many times as long."""
    now = time.monotonic()
    outer = _deadline.get()
    token = _deadline.set(now + seconds if outer is None else min(outer, now + seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def _size(value: Any, limit: int = TEXT_MAX) -> int:
    """About how many characters ``value`` prints as; counting stops once past ``limit``."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, bool) or item is None or isinstance(item, float):
            total += 1
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, dict):
            total += len(item) + 1
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item) + 1
            if total <= limit:
                stack.extend(item)
        else:
            total += 16
    return total


def _need(chars: int, what: str) -> None:
    if chars > TEXT_MAX:
        raise RenderLimit(f"{what} would be longer than {TEXT_MAX} characters")


def _bounded(value: Any, what: str) -> Any:
    _need(_size(value), what)
    return value


def _width(value: Any, what: str) -> None:
    if isinstance(value, int) and value > _ARG_INT_MAX:
        raise RenderLimit(f"{what} {value} is over {_ARG_INT_MAX}")


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _replace_size(s: Any, old: Any, new: Any, count: Any) -> int:
    if not (isinstance(s, str | bytes) and isinstance(old, str | bytes)):
        return 0
    hits = s.count(old) if old else len(s) + 1  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * _size(new)


def _join_items(items: Any) -> list[Any]:
    out = []
    budget = _current()
    for item in items:
        budget.tick()
        out.append(item)
        if len(out) > TEXT_MAX:
            raise RenderLimit(f"joining more than {TEXT_MAX} items")
    return out


def _join_size(sep: Any, items: list[Any]) -> int:
    total = _size(sep) * max(len(items) - 1, 0)
    for item in items:
        total += _size(item)
        if total > TEXT_MAX:
            break
    return total


_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _percent_size(fmt: str, values: Any) -> int:
    """An upper bound of ``fmt % values``: widths, precisions and the longest value, per field."""
    if isinstance(values, dict):
        parts = list(values.values())
    elif isinstance(values, tuple):
        parts = list(values)
    else:
        parts = [values]
    longest = max((_size(p) for p in parts), default=0)
    total = len(fmt)
    for match in _PERCENT.finditer(fmt):
        for number in match.groups():
            if number == "*":
                total += _ARG_INT_MAX
            elif number:
                total += int(number) if len(number) < 8 else TEXT_MAX + 1
        total += longest
        if total > TEXT_MAX:
            break
    return total


def _check_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a method call whose result would be too long, before it is built."""
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    if isinstance(owner, int) and name == "to_bytes":
        _width(_arg(args, kwargs, 0, "length", 1), "to_bytes() length")
    if not isinstance(owner, str | bytes):
        return
    if name == "translate":
        table = _arg(args, kwargs, 0, "table", None)
        if isinstance(table, dict):
            longest = max((_size(v) for v in table.values()), default=1)
            _need(len(owner) * max(longest, 1), "translate()")
    elif name in ("ljust", "rjust", "center", "zfill"):
        _width(_arg(args, kwargs, 0, "width", 0), f"{name}() width")
    elif name == "expandtabs":
        tab = _arg(args, kwargs, 0, "tabsize", 8)
        if isinstance(tab, int):
            tabs = owner.count("\t" if isinstance(owner, str) else b"\t")  # type: ignore[arg-type]
            _need(len(owner) + tabs * tab, "expandtabs()")
    elif name == "replace":
        new = _arg(args, kwargs, 1, "new", "")
        count = _arg(args, kwargs, 2, "count", -1)
        _need(_replace_size(owner, _arg(args, kwargs, 0, "old", ""), new, count), "replace()")


class _BoundedFormatter(SandboxedFormatter):
    """``str.format`` with every field's width bounded and every field's text counted."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in re.findall(r"\d+", format_spec):
            if len(number) > 6 or int(number) > _ARG_INT_MAX:
                raise RenderLimit(f"format width {number[:12]} is over {_ARG_INT_MAX}")
        text = super().format_field(value, format_spec)
        _current().spend(len(text))
        return text


class _BoundedEscapeFormatter(_BoundedFormatter, EscapeFormatter):
    pass


# Filters whose result can outgrow their input: checked (and joins materialised) first.
def _filter_precheck(name: str, bound: inspect.BoundArguments) -> None:
    a = bound.arguments
    if name == "center":
        _width(a.get("width"), "center width")
    elif name == "indent":
        s, width = a.get("s", ""), a.get("width", 4)
        per_line = len(width) if isinstance(width, str) else width
        if isinstance(s, str) and isinstance(per_line, int):
            _need(len(s) + (s.count("\n") + 1) * per_line, "indent")
    elif name == "join":
        items = _join_items(a.get("value", ()))
        a["value"] = items
        if a.get("attribute") is None:
            _need(_join_size(a.get("d", ""), items), "join")
    elif name == "replace":
        _need(_replace_size(a.get("s"), a.get("old"), a.get("new"), a.get("count")), "replace")
    elif name == "format":
        fmt = a.get("value")
        if isinstance(fmt, str):
            _need(_percent_size(fmt, a.get("kwargs") or tuple(a.get("args", ()))), "format")
    elif name == "wordwrap":
        s, width = a.get("s", ""), a.get("width", 79)
        wrap = a.get("wrapstring") or "\n"
        if isinstance(s, str) and isinstance(width, int) and width > 0:
            _need(len(s) + (len(s) // width + 1) * _size(wrap), "wordwrap")
    elif name == "urlize":
        value = a.get("value", "")
        per_link = _size(a.get("target")) + _size(a.get("rel")) + 40  # a link is 5+ characters
        if isinstance(value, str):
            _need(2 * len(value) + (len(value) // 5 + 1) * per_link, "urlize")
    elif name == "tojson":
        _width(a.get("indent"), "tojson indent")
        if isinstance(a.get("indent"), int) and a["indent"] > 16:
            raise RenderLimit("tojson indent is over 16")
    elif name == "batch":
        _width(a.get("linecount"), "batch size")
    elif name == "slice":
        _width(a.get("slices"), "slice count")


_PASSED = ("eval_ctx", "context", "environment", "env")


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    try:
        signature: inspect.Signature | None = inspect.signature(func)
    except (TypeError, ValueError):
        signature = None
    # Jinja hands some filters a context first that their visible signature may not list.
    params = list(signature.parameters) if signature else []
    passed = getattr(func, "jinja_pass_arg", None) is not None
    skip = 1 if passed and not (params and params[0] in _PASSED) else 0

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _current().tick()
        for value in (*args, *kwargs.values()):
            _bounded(value, f"an argument of filter {name!r}")
        if signature is not None:
            try:
                bound = signature.bind(*args[skip:], **kwargs)
            except TypeError:
                pass  # a call the filter itself will refuse
            else:
                _filter_precheck(name, bound)
                args, kwargs = (*args[:skip], *bound.args), bound.kwargs
        return _bounded(func(*args, **kwargs), f"the result of filter {name!r}")

    return bounded


def _finalize(value: Any) -> Any:
    """Every ``{{ expression }}`` passes here before it is printed."""
    return _bounded(value, "a printed value")


class _BoundedBuffer(list[Any]):
    """Where macro, block and filter bodies write: every write is counted."""

    def append(self, item: Any) -> None:
        _current().spend(len(item) + 1 if isinstance(item, str) else 1)
        super().append(item)


@pass_context
def _ticking(context: Context, iterable: Any) -> Iterator[Any]:
    """A loop's iterable, checked against the deadline at every item."""
    budget = _current()
    for item in iterable:
        budget.tick()
        yield item


_TICKING = "tminus_loop_deadline"


class _BoundedCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        # Jinja allows no new node types: every loop's iterable goes through a filter instead.
        for loop in node.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _TICKING, [], [], None, None, lineno=loop.lineno)
        super().visit_Template(node, frame)

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.bounded_buffer()")

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.bounded_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        del self.globals["lipsum"]  # paragraphs of filler text on demand
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters[_TICKING] = _ticking

    @staticmethod
    def bounded_buffer() -> list[Any]:
        return _BoundedBuffer()

    @staticmethod
    def bounded_concat(join: Callable[[Any], str], parts: tuple[Any, ...]) -> str:
        _need(sum(_size(p) for p in parts), "joining with ~")
        text = join(parts)
        _current().spend(len(text))
        return text

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        # Fields and properties of a launch, yes; pydantic's methods (model_dump_json, ...) no.
        return not (
            isinstance(obj, BaseModel) and callable(value) and attr not in type(obj).model_fields
        )

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _current().tick()
        ints = isinstance(left, int) and isinstance(right, int)
        if operator == "*":
            if ints:
                if left.bit_length() + right.bit_length() > _INT_BITS_MAX:
                    raise RenderLimit(f"a product larger than {_INT_BITS_MAX} bits")
            elif isinstance(right, int) and right > 0:
                _need(_size(left) * right, "repeating a value")
            elif isinstance(left, int) and left > 0:
                _need(_size(right) * left, "repeating a value")
        elif operator == "**":
            if ints and right > 0 and abs(left) > 1 and left.bit_length() * right > _INT_BITS_MAX:
                raise RenderLimit(f"a power larger than {_INT_BITS_MAX} bits")
        elif operator == "%" and isinstance(left, str):
            _need(_percent_size(left, right), "formatting with %")
        elif operator == "+" and not ints:
            _need(_size(left) + _size(right), "adding")
        return _bounded(super().call_binop(context, operator, left, right), "a result")

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _current().tick()
        for value in (*args, *kwargs.values()):
            _bounded(value, "an argument")
        _check_method(__obj, args, kwargs)
        if getattr(__obj, "__name__", "") == "join" and isinstance(
            getattr(__obj, "__self__", None), str | bytes
        ):
            items = _join_items(args[0]) if args else []
            _need(_join_size(__obj.__self__, items), "join()")
            args = (items, *args[1:])
        result = super().call(__context, __obj, *args, **kwargs)
        return _bounded(result, "a result")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if super().wrap_str_format(value) is None:
            return None
        f_self = value.__self__
        formatter: _BoundedFormatter
        if isinstance(f_self, Markup):
            formatter = _BoundedEscapeFormatter(self, escape=f_self.escape)
        else:
            formatter = _BoundedFormatter(self)
        is_format_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs, args = args[0], ()
            result: str = type(f_self)(formatter.vformat(f_self, args, kwargs))
            return result

        return functools.update_wrapper(wrapper, value)


_env = _BoundedEnvironment(
    undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False
)


@lru_cache(maxsize=1024)
def _compiled(template: str) -> Template:
    return _env.from_string(template)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TemplateSyntaxError):
        return f"line {exc.lineno}: {exc.message}"
    if isinstance(exc, RenderLimit | TemplateError):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "calls or nests too deeply"
    if isinstance(exc, MemoryError):
        return "needs too much memory"
    return f"{exc} ({type(exc).__name__})"


def render(
    template: str,
    context: dict[str, Any],
    *,
    where: str = "template",
    source: str = "playbook",
    limit: int = TEXT_MAX,
) -> str:
    """Render a playbook template within the bounds; undefined names are errors, never empty.

    Any failure, Jinja's or Python's, is a PlaybookError for ``source`` naming ``where``.
    """
    budget = _Budget(RENDER_SECONDS, _deadline.get())
    token = _budget.set(budget)
    try:
        chunks: list[str] = []
        length = 0
        for chunk in _compiled(template).generate(**context):
            length += len(chunk)
            if length > limit + 1_000:  # leading and trailing space is stripped below
                raise RenderLimit(f"renders to more than {limit} characters")
            budget.spend(len(chunk))
            chunks.append(chunk)
        text = "".join(chunks).strip()
        if len(text) > limit:
            raise RenderLimit(f"renders to {len(text)} characters; at most {limit} fit")
        return text
    except Exception as exc:  # every failure of a template is the playbook's
        problem = f"{where}: template error: {clip(_reason(exc), 300)}"
        raise PlaybookError(source, [problem]) from None
    finally:
        _budget.reset(token)


def checklist_markdown(items: list[str]) -> str:
    return "\n".join(f"- [ ] {item}" for item in items)


def sister_questions(playbook: Playbook) -> str:
    """The questions part of a sister issue, as its description template receives it. The
    answers go in the form below the issue's key marker (``domain.answers.answer_form``)."""
    sister = playbook.sister_issue

    def listed(questions: list[str]) -> str:
        return "\n".join(f"- {q}" for q in questions)

    return (
        "### Questions\n\n"
        "The engineer who built the feature answers:\n\n"
        + listed(sister.engineering_questions)
        + "\n\nProduct marketing answers:\n\n"
        + listed(sister.marketing_questions)
        + f"\n\nAnswer under each question in **Answers** below, in place of {PLACEHOLDER}."
    )


def issue_title(text: str, *, where: str, source: str) -> str:
    """``text`` if GitLab can hold it as an issue title; a PlaybookError naming ``where`` if not."""
    if len(text) > TITLE_MAX:
        raise PlaybookError(
            source,
            [
                f"{where}: makes an issue title of {len(text)} characters; GitLab titles hold "
                f"at most {TITLE_MAX}: shorten the template (or use |truncate)"
            ],
        )
    return text


def _sample(longest: bool) -> LaunchRequest:
    """The launch templates are tried on: a plain one, and one with every text field as long
    as a launch file may make it (so a title that fits the first but not GitLab shows now)."""

    def text(n: int, word: str) -> str:
        return ((word + " ") * n)[:n].strip() + "x" if longest else word

    return LaunchRequest(
        slug="s" * 48 if longest else "sample-launch",
        title=text(119, "Sample launch"),
        tier=Tier.L1,
        launch_date=date(2030, 1, 15),
        owner="o" * 255 if longest else "pmm",
        project="group/project",
        features=[
            Feature(
                name=text(119, "Sample feature"),
                summary=text(279, "A sample feature used to check templates."),
                docs_urls=["https://docs.example.com/sample"],  # type: ignore[list-item]
                features_page_title=text(119, "Sample feature"),
            )
        ],
        release_tag="v" * 255 if longest else "v1.0.0",
    )


_SAMPLES = (_sample(longest=False), _sample(longest=True))


def template_context(request: LaunchRequest, playbook: Playbook, **extra: Any) -> dict[str, Any]:
    """The names every template can use; documented in the default playbook's header."""
    after = {"late_work": LATE_WORK, "metrics_table": metrics_table(request)}
    return {
        "launch": request,
        "tier": request.tier.value,
        "roles": playbook.roles,
        **after,
        **extra,
    }


class _OutOfTime(Exception):
    pass


class _Trial:
    """Renders a playbook's templates for one sample launch, collecting problems."""

    def __init__(self, playbook: Playbook, sample: LaunchRequest, note: str) -> None:
        self.playbook = playbook
        self.sample = sample
        self.note = note
        self.problems: list[str] = []

    def render(self, where: str, template: str, limit: int, **extra: Any) -> str:
        context = template_context(self.sample, self.playbook, **extra)
        try:
            return render(
                template, context, where=where + self.note, source=self.playbook.source, limit=limit
            )
        except PlaybookError as exc:
            self.problems.extend(exc.problems)
            deadline = _deadline.get()
            if deadline is not None and time.monotonic() > deadline:
                self.problems.append(f"(templates after {where} were not checked: out of time)")
                raise _OutOfTime from None
            return ""

    def title(self, where: str, text: str) -> None:
        try:
            issue_title(text, where=where + self.note, source=self.playbook.source)
        except PlaybookError as exc:
            self.problems.extend(exc.problems)

    def run(self) -> list[str]:
        playbook, sample = self.playbook, self.sample
        tracking, sister = playbook.tracking_issue, playbook.sister_issue
        checklist = checklist_markdown(
            [f"**{a.title}** — #1, due 2030-01-01, {a.owner_role}" for a in playbook.activities]
        )
        try:
            with time_limit(CHECK_SECONDS):
                where = "tracking_issue.title"
                text = self.render(
                    where, tracking.title, TITLE_MAX, checklist="", release_checklist=""
                )
                self.title(where, text)
                self.render(
                    "tracking_issue.description",
                    tracking.description,
                    TRACKING_MAX,
                    checklist=checklist,
                    release_checklist=checklist_markdown(playbook.release_checklist),
                    features=sample.features,
                )
                feature = sample.features[0]
                where = "sister_issue.title"
                self.title(where, self.render(where, sister.title, TITLE_MAX, feature=feature))
                self.render(
                    "sister_issue.description",
                    sister.description,
                    TEXT_MAX,
                    feature=feature,
                    questions=sister_questions(playbook),
                )
                for i, act in enumerate(playbook.activities):
                    at = f"activities[{i}] ({act.key})"
                    ctx = {"activity": act, "due": date(2030, 1, 1), "owner": sample.owner}
                    text = self.render(f"{at}.title", act.title, TITLE_MAX, **ctx)
                    self.title(f"{at}.title", f"{text}: {sample.title}")
                    self.render(f"{at}.description", act.description, TEXT_MAX, **ctx, checklist="")
                    for j, item in enumerate(act.checklist):
                        self.render(f"{at}.checklist[{j}]", item, ITEM_MAX, **ctx)
        except _OutOfTime:
            pass
        return self.problems


def _check_templates(playbook: Playbook) -> list[str]:
    """Trial-render every template against the sample launches, each within one time limit;
    return problems. The long sample is tried only once the plain one passes."""
    problems = _Trial(playbook, _SAMPLES[0], "").run()
    if not problems:
        note = " (with a launch whose fields are as long as allowed)"
        problems = _Trial(playbook, _SAMPLES[1], note).run()
    return problems


# --- parsing (reading the file is tminus.integrations.files.load_playbook's job) ------------


def parse_playbook(data: dict[str, Any], source: str) -> Playbook:
    """Validate a playbook's data, trial-rendering every template; errors name ``source``."""
    try:
        playbook = Playbook.model_validate(data)
    except ValidationError as exc:
        raise PlaybookError(source, describe_validation_error(exc)) from None
    playbook._source = source
    problems = _check_templates(playbook)
    if problems:
        raise PlaybookError(source, problems)
    return playbook


def parse_playbook_file(raw: bytes, source: str) -> Playbook:
    """Parse and validate the bytes of a playbook YAML file; errors name ``source``."""
    return parse_playbook(parse_yaml_mapping(raw, source, PlaybookError), source)
