"""Page checks, the pure part: which pages a plan must check, and whether each one passes.

A launch's page checks are the release checklist's "fully documented" and "shown on /features
and in its compare view": the docs pages of each priority feature (``docs-check``) and the
/features page with its compare view (``features-page-check``). ``page_targets`` turns the
plan's checks into ``PageTarget``s; an adapter reads each target into a ``PageObservation``
(``tminus.integrations.pages``); ``judge`` decides each page and ``check_results`` makes the
rows. A page check writes nothing, so there is nothing to apply: a passing page is
``unchanged``, a failing one ``failed``, with a reason a PMM can act on.

A page passes when it answers 2xx and its text mentions the feature, compared case-folded
with runs of whitespace as one space. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from tminus.domain.plan import Plan
from tminus.domain.playbook import DOCS_CHECK, FEATURES_CHECK
from tminus.domain.request import LaunchRequest
from tminus.domain.results import ActionResult, Outcome


@dataclass(frozen=True)
class PageTarget:
    """A page that must mention something.

    ``match="any"``: one of ``must_mention`` is enough (a name or its alias).
    ``match="all"``: every one must appear (the /features page lists every feature); the
    failure reason names the missing ones.
    """

    url: str
    label: str
    must_mention: tuple[str, ...]
    match: Literal["any", "all"] = "any"


@dataclass(frozen=True)
class PageObservation:
    """What reading one URL found: the page's visible text, or why there is none.

    ``status`` is the last HTTP status (``None`` when no answer came); ``final_url`` the URL
    that answered after redirects (``None`` when the URL itself was unusable). ``text`` is set
    only for a 2xx page that could be read; otherwise ``reason`` says why it could not be
    (``status 404``, ``timeout after 10s``, ``host not allowed: ...``).
    """

    url: str
    status: int | None
    final_url: str | None
    text: str | None
    reason: str | None = None


@dataclass(frozen=True)
class PageResult:
    url: str
    label: str
    ok: bool
    status: int | None
    final_url: str | None
    reason: str


# --- from a plan to targets -----------------------------------------------------------------


def page_targets(plan: Plan, features_url: str | None, compare_url: str | None) -> list[PageTarget]:
    """The pages the plan's checks ask for, in this order: each feature's docs pages when
    ``docs-check`` is planned, then the /features page and its compare view (those of the URLs
    that are given) when ``features-page-check`` is. Other page-check keys check nothing."""
    wanted = {c.activity_key for c in plan.checks}
    targets = docs_targets(plan.request) if DOCS_CHECK in wanted else []
    if FEATURES_CHECK in wanted:
        targets += features_targets(plan.request, features_url, compare_url)
    return targets


def docs_targets(request: LaunchRequest) -> list[PageTarget]:
    """Each feature's docs pages. A docs URL shared by several features is one target that
    must mention all of them."""
    docs: dict[str, list[str]] = {}
    for feature in request.features:
        for url in feature.docs_urls:
            names = docs.setdefault(str(url), [])
            if feature.name not in names:
                names.append(feature.name)
    return [
        PageTarget(url, f"Docs mention {', '.join(names)}", tuple(names), match="all")
        for url, names in docs.items()
    ]


def features_targets(
    request: LaunchRequest, features_url: str | None, compare_url: str | None
) -> list[PageTarget]:
    """The /features page and its compare view (each when its URL is given): one target each
    that must list every feature's ``features_page_title``; a failure names the missing ones."""
    titles = tuple(dict.fromkeys(f.features_page_title for f in request.features))
    listed = ", ".join(titles)
    targets = []
    if features_url:
        targets.append(PageTarget(features_url, f"/features lists {listed}", titles, "all"))
    if compare_url:
        targets.append(
            PageTarget(compare_url, f"/features compare view lists {listed}", titles, "all")
        )
    return targets


# --- judging --------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Case-folded, one space between words: how mentions are compared."""
    return " ".join(text.split()).casefold()


def _quoted(items: Iterable[str], joiner: str = ", ") -> str:
    return joiner.join(f"'{item}'" for item in items)


def judge(target: PageTarget, observation: PageObservation) -> PageResult:
    """Does the observed page answer 2xx and mention what ``target`` asks for?"""

    def result(ok: bool, reason: str) -> PageResult:
        return PageResult(
            target.url, target.label, ok, observation.status, observation.final_url, reason
        )

    if observation.text is None:
        return result(False, observation.reason or "no content")
    status = observation.status
    if status is not None and not 200 <= status < 300:
        return result(False, f"status {status}")
    text = normalise(observation.text)
    found = [m for m in target.must_mention if normalise(m) in text]
    missing = [m for m in target.must_mention if m not in found]
    if not target.must_mention:
        return result(True, "ok: page is up (nothing to look for)")
    if target.match == "all":
        if missing:
            if len(target.must_mention) == 1:
                return result(False, f"not mentioned (looked for {_quoted(missing)})")
            return result(
                False,
                f"not mentioned: {_quoted(missing)} (looked for {_quoted(target.must_mention)})",
            )
        return result(True, f"ok: mentions {_quoted(found)}")
    if found:
        return result(True, f"ok: mentions {_quoted(found[:1])}")
    return result(False, f"not mentioned (looked for {_quoted(target.must_mention, ' or ')})")


def judge_all(
    targets: Sequence[PageTarget], observations: Sequence[PageObservation]
) -> list[PageResult]:
    """One result per target, in order; ``observations`` are the reader's, one per target."""
    if len(targets) != len(observations):
        raise ValueError(f"{len(observations)} observations for {len(targets)} targets")
    for target, seen in zip(targets, observations, strict=True):
        if seen.url != target.url:
            raise ValueError(f"observation of {seen.url} given for target {target.url}")
    return [judge(t, o) for t, o in zip(targets, observations, strict=True)]


# --- the rows -------------------------------------------------------------------------------


def check_results(results: Iterable[PageResult]) -> list[ActionResult]:
    """Rows for the results table: a check writes nothing, so a pass is ``unchanged``."""
    rows = []
    for r in results:
        extra = {"status": str(r.status) if r.status is not None else ""}
        if r.final_url and r.final_url != r.url:
            extra["final_url"] = r.final_url
        rows.append(
            ActionResult(
                key=f"check:{r.url}",
                kind="page",
                title=r.label,
                outcome=Outcome.unchanged if r.ok else Outcome.failed,
                url=r.url,
                detail=r.reason,
                extra=extra,
            )
        )
    return rows
