"""Page checks, the pure part (which pages a plan checks, how a page is judged, the rows),
and the task that reads pages through a `PageReader` and judges them."""

from __future__ import annotations

import pytest

from tminus.domain.pages import (
    PageObservation,
    PageResult,
    PageTarget,
    check_results,
    judge,
    judge_all,
    page_targets,
)
from tminus.domain.plan import Plan
from tminus.domain.planner import plan_launch
from tminus.domain.playbook import DOCS_CHECK, FEATURES_CHECK, Playbook
from tminus.domain.request import LaunchRequest
from tminus.domain.results import Outcome
from tminus.integrations.pages_memory import MemoryPages
from tminus.settings import load_settings
from tminus.tasks.pages import check_pages

from .conftest import TODAY

BASE = "http://127.0.0.1:4281"
FEATURES = f"{BASE}/features"
COMPARE = f"{BASE}/features/compare"


def plan_of(request: LaunchRequest, playbook: Playbook, *keys: str) -> Plan:
    """The launch's plan with only the page checks named by ``keys``."""
    plan = plan_launch(request, playbook, TODAY)
    checks = tuple(c for c in plan.checks if c.activity_key in keys)
    assert {c.activity_key for c in checks} == set(keys)
    return plan.model_copy(update={"checks": checks})


def page(text: str | None, status: int | None = 200, reason: str | None = None) -> PageObservation:
    return PageObservation("http://docs.test/p", status, "http://docs.test/p", text, reason)


# --- targets --------------------------------------------------------------------------------


def test_the_playbook_defines_the_check_keys(playbook: Playbook) -> None:
    kinds = {a.key: a.kind.value for a in playbook.activities}
    assert kinds[DOCS_CHECK] == kinds[FEATURES_CHECK] == "page_check"


def test_page_targets_for_l1(l1: LaunchRequest, playbook: Playbook) -> None:
    plan = plan_launch(l1, playbook, TODAY)
    targets = page_targets(plan, FEATURES, COMPARE)
    assert [(t.url, t.must_mention, t.match) for t in targets] == [
        (f"{BASE}/docs/code-review-agent", ("Code Review Agent",), "all"),
        (f"{BASE}/docs/review-policies", ("Review policies",), "all"),
        (FEATURES, ("AI code review", "Review policies"), "all"),
        (COMPARE, ("AI code review", "Review policies"), "all"),
    ]
    assert [t.label for t in targets] == [
        "Docs mention Code Review Agent",
        "Docs mention Review policies",
        "/features lists AI code review, Review policies",
        "/features compare view lists AI code review, Review policies",
    ]
    assert len({t.url for t in targets}) == len(targets)  # check:{url} keys are unique
    assert [t.url for t in page_targets(plan, None, None)] == [t.url for t in targets[:2]]


def test_shared_docs_url_must_mention_every_feature(l1: LaunchRequest, playbook: Playbook) -> None:
    data = l1.model_dump(mode="json")
    data["features"][1]["docs_urls"] = data["features"][0]["docs_urls"]
    plan = plan_launch(LaunchRequest.model_validate(data), playbook, TODAY)
    targets = page_targets(plan, None, None)
    assert [t.must_mention for t in targets] == [("Code Review Agent", "Review policies")]


def test_l3_checks_docs_only(l3: LaunchRequest, playbook: Playbook) -> None:
    plan = plan_launch(l3, playbook, TODAY)
    assert [c.activity_key for c in plan.checks] == [DOCS_CHECK]
    targets = page_targets(plan, FEATURES, COMPARE)
    assert [t.url for t in targets] == [f"{BASE}/docs/dark-mode"]


def test_features_check_alone_checks_the_features_pages(
    l1: LaunchRequest, playbook: Playbook
) -> None:
    plan = plan_of(l1, playbook, FEATURES_CHECK)
    assert [t.url for t in page_targets(plan, FEATURES, COMPARE)] == [FEATURES, COMPARE]
    assert page_targets(plan, None, None) == []


def test_a_plan_without_checks_checks_nothing(l1: LaunchRequest, playbook: Playbook) -> None:
    assert page_targets(plan_of(l1, playbook), FEATURES, COMPARE) == []


# --- judging --------------------------------------------------------------------------------


def test_any_needs_one_mention_ignoring_case_and_spacing() -> None:
    target = PageTarget("http://docs.test/p", "Docs", ("Merge trains", "merge queue"))
    ok = judge(target, page("All about MERGE\n   Queue and more"))
    assert ok == PageResult(
        "http://docs.test/p", "Docs", True, 200, "http://docs.test/p", "ok: mentions 'merge queue'"
    )
    missing = judge(target, page("Dark mode"))
    assert not missing.ok
    assert missing.reason == "not mentioned (looked for 'Merge trains' or 'merge queue')"


def test_all_names_the_missing_ones() -> None:
    target = PageTarget("http://docs.test/p", "F", ("AI code review", "Review policies"), "all")
    assert judge(target, page("AI code review, Review policies")).reason == (
        "ok: mentions 'AI code review', 'Review policies'"
    )
    failed = judge(target, page("AI code review"))
    assert not failed.ok
    assert failed.reason == (
        "not mentioned: 'Review policies' (looked for 'AI code review', 'Review policies')"
    )
    one = PageTarget("http://docs.test/p", "D", ("Review policies",), "all")
    assert judge(one, page("nothing")).reason == "not mentioned (looked for 'Review policies')"


def test_a_page_that_could_not_be_read_fails_with_its_reason() -> None:
    target = PageTarget("http://docs.test/p", "D", ("x",))
    result = judge(target, page(None, 404, "status 404"))
    assert (result.ok, result.status, result.reason) == (False, 404, "status 404")
    assert judge(target, page(None, None, None)).reason == "no content"


def test_a_page_must_answer_2xx_even_with_text() -> None:
    target = PageTarget("http://docs.test/p", "D", ("x",))
    result = judge(target, page("x marks the spot", 500))
    assert (result.ok, result.reason) == (False, "status 500")
    assert judge(target, page("x marks the spot", 204)).ok


def test_nothing_to_look_for_passes_when_the_page_is_up() -> None:
    result = judge(PageTarget("http://docs.test/p", "up", ()), page(""))
    assert (result.ok, result.reason) == (True, "ok: page is up (nothing to look for)")


def test_judge_all_pairs_observations_with_their_targets() -> None:
    a = PageTarget("http://docs.test/a", "A", ("x",))
    b = PageTarget("http://docs.test/b", "B", ("x",))
    obs_a = PageObservation(a.url, 200, a.url, "x")
    obs_b = PageObservation(b.url, 404, b.url, None, "status 404")
    assert [r.ok for r in judge_all([a, b, a], [obs_a, obs_b, obs_a])] == [True, False, True]
    with pytest.raises(ValueError, match="1 observations for 2 targets"):
        judge_all([a, b], [obs_a])
    with pytest.raises(ValueError, match=r"observation of http://docs\.test/b given for target"):
        judge_all([a, b], [obs_b, obs_a])


# --- rows -----------------------------------------------------------------------------------


def test_rows() -> None:
    url = "http://docs.test/moved"
    rows = check_results(
        [
            PageResult(url, "Moved", True, 200, "http://docs.test/new", "ok: mentions 'x'"),
            PageResult("http://docs.test/p", "P", False, None, "http://docs.test/p", "timeout"),
        ]
    )
    assert [(r.key, r.kind, r.title, r.outcome, r.url, r.detail) for r in rows] == [
        (f"check:{url}", "page", "Moved", Outcome.unchanged, url, "ok: mentions 'x'"),
        ("check:http://docs.test/p", "page", "P", Outcome.failed, "http://docs.test/p", "timeout"),
    ]
    assert rows[0].extra == {"status": "200", "final_url": "http://docs.test/new"}
    assert rows[1].extra == {"status": ""}


def test_docs_pages_are_checked_only_when_the_docs_check_is_planned(
    l1: LaunchRequest, playbook: Playbook
) -> None:
    """A docs URL that is also the /features page was kept, as a "Docs mention" target, by a
    plan without ``docs-check`` (and a second target with the same ``check:{url}`` key)."""
    data = l1.model_dump(mode="json")
    data["features"][0]["docs_urls"] = [FEATURES]
    request = LaunchRequest.model_validate(data)
    features_only = plan_of(request, playbook, FEATURES_CHECK)
    assert [t.label for t in page_targets(features_only, FEATURES, COMPARE)] == [
        "/features lists AI code review, Review policies",
        "/features compare view lists AI code review, Review policies",
    ]
    [docs] = plan_of(request, playbook, DOCS_CHECK).checks
    other = features_only.model_copy(
        update={"checks": (docs.model_copy(update={"activity_key": "custom-check"}),)}
    )
    assert page_targets(other, FEATURES, COMPARE) == []


def test_the_task_reads_the_planned_pages_and_judges_them(
    l1: LaunchRequest, playbook: Playbook
) -> None:
    settings = load_settings(
        {"TMINUS_FEATURES_URL": FEATURES, "TMINUS_FEATURES_COMPARE_URL": COMPARE}
    )
    pages = MemoryPages(
        {
            f"{BASE}/docs/code-review-agent": "The Code Review Agent reviews merge requests.",
            f"{BASE}/docs/review-policies": 500,
            FEATURES: "AI code review. Review policies.",
        }
    )
    rows = check_pages.fn(pages, plan_launch(l1, playbook, TODAY), settings)
    assert [(r.key, r.outcome, r.detail) for r in rows] == [
        (
            f"check:{BASE}/docs/code-review-agent",
            Outcome.unchanged,
            "ok: mentions 'Code Review Agent'",
        ),
        (f"check:{BASE}/docs/review-policies", Outcome.failed, "status 500"),
        (
            f"check:{FEATURES}",
            Outcome.unchanged,
            "ok: mentions 'AI code review', 'Review policies'",
        ),
        (f"check:{COMPARE}", Outcome.failed, "status 404"),
    ]
    assert pages.reads == [
        f"{BASE}/docs/code-review-agent",
        f"{BASE}/docs/review-policies",
        FEATURES,
        COMPARE,
    ]
