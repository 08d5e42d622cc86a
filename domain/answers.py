"""The sister issue's answers: the form people fill in, and reading it back. Pure.

Below its key marker (people's part of the description, which tminus never rewrites; see
``tminus.domain.issues``) a sister issue carries one heading per question with a placeholder
under it::

    #### Who is it for?

    _(answer here)_

The engineer or PMM replaces the placeholder with the answer in GitLab's editor. An answer is
everything under its question up to the next heading (or the next question written as a bold
line); a placeholder, HTML comments and blank lines alone leave a question unanswered.

Answers fill the sales kit where the launch file leaves a field empty (``fill_kit``): the
playbook's ``sister_issue.kit`` names the question behind each kit field. What is read back is
bounded (``ANSWER_MAX`` characters an answer, the kit's own limits once in a ``Feature``) and is
plain text: the Slack message escapes it like any other text of the kit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Literal, get_args

from pydantic import ValidationError

from tminus.domain.markers import KEY_PATTERN
from tminus.domain.plan import IssueRole, Plan
from tminus.domain.request import Feature, LaunchRequest

if TYPE_CHECKING:  # issues.py completes sister issues with ``missing_form``
    from tminus.domain.issues import IssueState

KitField = Literal["audience", "pain", "benefit", "workflow", "selling_points", "limitations"]
KIT_FIELDS: tuple[str, ...] = get_args(KitField)
LIST_FIELDS = ("selling_points", "limitations")
PLACEHOLDER = "_(answer here)_"
ANSWER_MAX = 2000  # characters kept of one answer
ITEMS_MAX = 8  # a kit list holds at most this many points (``Feature``)
TEXT_MAX = 280  # a kit text field or list item (``Feature``)

_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?[ \t#]*$")
_BOLD_LINE = re.compile(r"^\s*(\*\*|__)(.+?)\1\s*:?\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_PLACEHOLDER = re.compile(r"[_*]*\(\s*answer here\s*\)[_*]*", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,2}[.)])\s+(?:\[[ xX]\]\s+)?(.*)$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


def _normal(text: str) -> str:
    """A question as compared: no emphasis, case or spacing, no final punctuation."""
    text = re.sub(r"[*_`]", "", text)
    return " ".join(text.casefold().split()).rstrip("?:.! ")


def answer_form(engineering: Iterable[str], marketing: Iterable[str]) -> str:
    """The answer form a new sister issue gets below its key marker."""
    lines = [
        "",
        "## Answers",
        "",
        "Type each answer under its question, in place of the placeholder. tminus reads them "
        "into the sales kit and the launch audit; it never rewrites this part.",
    ]
    for group, questions in (
        ("Engineering answers", engineering),
        ("Product marketing answers", marketing),
    ):
        lines += ["", f"### {group}"]
        for question in questions:
            lines += ["", f"#### {question}", "", PLACEHOLDER]
    return "\n".join(lines) + "\n"


def _sections(text: str, questions: Iterable[str]) -> dict[str, list[str]]:
    """Question -> the lines under its first heading; only questions that have a heading."""
    wanted = {_normal(q): q for q in questions}
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    fenced = False
    for line in text.replace("\r\n", "\n").split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            heading = _HEADING.match(line)
            bold = None if heading else _BOLD_LINE.match(line)
            if heading or (bold and _normal(bold.group(2)) in wanted):
                title = (heading.group(1) or "") if heading else bold.group(2)  # type: ignore[union-attr]
                question = wanted.get(_normal(title))
                current = None
                if question is not None and question not in found:
                    current = found[question] = []
                continue
        if current is not None:
            current.append(line)
    return found


def _people_part(description: str) -> str:
    match = KEY_PATTERN.search(description or "")
    return description[match.end() :] if match else description or ""


def _clean(lines: list[str]) -> str:
    text = _COMMENT.sub("", "\n".join(lines))
    text = _CONTROL.sub("", _PLACEHOLDER.sub("", text))
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(ln.rstrip() for ln in text.split("\n"))).strip()
    return clip_text(text, ANSWER_MAX)


def clip_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters at a word, marked with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip() + "…"


def read_answers(description: str, questions: Iterable[str]) -> dict[str, str]:
    """Question -> answer, for the questions answered in a sister issue's description (people's
    part, below the key marker; the whole description when it has no marker)."""
    sections = _sections(_people_part(description), questions)
    answers = {q: _clean(lines) for q, lines in sections.items()}
    return {q: a for q, a in answers.items() if a}


def unanswered(description: str, questions: Iterable[str]) -> list[str]:
    """The questions asked in the issue's answer form and not answered yet, in playbook
    order. A question the form lacks (an issue made before the form, or a question added to
    the playbook since) is not counted: there is nowhere to answer it until the next launch
    run appends its heading."""
    listed = list(questions)
    asked = _sections(_people_part(description), listed)
    answers = read_answers(description, listed)
    return [q for q in listed if q in asked and q not in answers]


def missing_form(tail: str, questions: Iterable[str]) -> str:
    """What to append to people's part so every question has a heading: the whole form's
    questions that have none (a sister issue made before the form, or a question the playbook
    added since). Empty when nothing is missing; what people wrote is never changed."""
    listed = list(questions)
    have = _sections(tail, listed)
    missing = [q for q in listed if q not in have]
    if not missing:
        return ""
    lines = [] if "## Answers" in tail else ["", "## Answers"]
    for question in missing:
        lines += ["", f"#### {question}", "", PLACEHOLDER]
    return "\n".join(lines) + "\n"


# --- the sales kit --------------------------------------------------------------------------


def _items(answer: str) -> list[str]:
    """An answer as list items: its bullet lines, or else its lines."""
    lines = [ln for ln in answer.split("\n") if ln.strip()]
    bullets = [m.group(1) for ln in lines if (m := _BULLET.match(ln)) and m.group(1).strip()]
    items = bullets or lines
    return [clip_text(" ".join(i.split()), TEXT_MAX) for i in items][:ITEMS_MAX]


def fill_feature(feature: Feature, answers: Mapping[str, str], kit: Mapping[str, str]) -> Feature:
    """``feature`` with the kit fields its launch file leaves empty filled from ``answers``
    (question -> answer); ``kit`` maps a kit field to its question. The file always wins."""
    update: dict[str, object] = {}
    for field, question in kit.items():
        answer = answers.get(question)
        if not answer or getattr(feature, field, None):
            continue
        if field in LIST_FIELDS:
            update[field] = _items(answer)
        else:
            update[field] = clip_text(answer, TEXT_MAX)
    if not update:
        return feature
    try:
        return Feature.model_validate({**feature.model_dump(), **update})
    except ValidationError:  # cannot happen with the bounds above; never lose the file's kit
        return feature


def fill_kit(
    request: LaunchRequest, answers: Mapping[str, Mapping[str, str]], kit: Mapping[str, str]
) -> LaunchRequest:
    """The launch with each feature's empty kit fields filled from its sister issue's answers
    (``answers``: feature slug -> question -> answer)."""
    if not kit or not answers:
        return request
    features = [fill_feature(f, answers.get(f.slug, {}), kit) for f in request.features]
    if features == list(request.features):
        return request
    return request.model_copy(update={"features": features})


def sister_answers(plan: Plan, issues: Iterable[IssueState]) -> dict[str, dict[str, str]]:
    """Feature slug -> question -> answer, from the launch's sister issues as observed."""
    slug_of = {s.key: s.key.rsplit("/", 1)[1] for s in plan.issues if s.role is IssueRole.sister}
    questions = {s.key: s.questions for s in plan.issues if s.role is IssueRole.sister}
    return {
        slug_of[i.key]: read_answers(i.description, questions[i.key])
        for i in issues
        if i.key in slug_of
    }


def sister_unanswered(
    plan: Plan, issues: Iterable[IssueState]
) -> list[tuple[IssueState, list[str]]]:
    """The launch's sister issues with questions not answered yet, and those questions."""
    questions = {s.key: s.questions for s in plan.issues if s.role is IssueRole.sister}
    found = [(i, unanswered(i.description, questions[i.key])) for i in issues if i.key in questions]
    return [(issue, missing) for issue, missing in found if missing]
