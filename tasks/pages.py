"""Prefect task around the docs and /features page checks."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tminus.domain.plan import Plan
from tminus.domain.results import ActionResult
from tminus.integrations.pages import PageChecker, check_results, page_targets
from tminus.settings import Settings

DOCS_CHECK = "docs-check"
FEATURES_CHECK = "features-page-check"


def run_page_checks(checker: PageChecker, plan: Plan, settings: Settings) -> list[ActionResult]:
    """The checks the plan asks for: docs pages (``docs-check``) and the /features page with
    its compare view (``features-page-check``, when those URLs are configured)."""
    wanted = {c.activity_key for c in plan.checks}
    if not wanted:
        return []
    features = FEATURES_CHECK in wanted
    targets = page_targets(
        plan.request,
        settings.features_page if features else None,
        settings.features_compare_page if features else None,
    )
    if DOCS_CHECK not in wanted:
        pages = {settings.features_page, settings.features_compare_page}
        targets = [t for t in targets if t.url in pages]
    return check_results(checker.check_sync(targets))


@task(name="check-pages", cache_policy=NO_CACHE)
def check_pages(checker: PageChecker, plan: Plan, settings: Settings) -> list[ActionResult]:
    """Fetch every docs page of each priority feature, the /features page and its compare view;
    each must answer 2xx and mention the feature in its text. A failing page is a result that
    lowers readiness, not an error: no task retries, the checker bounds its own fetches."""
    return run_page_checks(checker, plan, settings)
