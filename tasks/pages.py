"""Prefect task around the docs and /features page checks: observe, then judge."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tminus.domain.pages import check_results, judge_all, page_targets
from tminus.domain.plan import Plan
from tminus.domain.results import ActionResult
from tminus.integrations.pages import PageReader
from tminus.settings import Settings


def run_page_checks(pages: PageReader, plan: Plan, settings: Settings) -> list[ActionResult]:
    """The checks the plan asks for (``tminus.domain.pages.page_targets``), read through
    ``pages`` and judged: one row per page, in target order."""
    targets = page_targets(plan, settings.features_page, settings.features_compare_page)
    if not targets:
        return []
    return check_results(judge_all(targets, pages.read(targets)))


@task(name="check-pages", cache_policy=NO_CACHE)
def check_pages(pages: PageReader, plan: Plan, settings: Settings) -> list[ActionResult]:
    """Read the pages the plan's checks ask for (the docs pages of each priority feature, the
    /features page and its compare view); each must answer 2xx and mention the feature in its
    text. A failing page is a result that lowers readiness, not an error: no task retries,
    the reader bounds its own fetches."""
    return run_page_checks(pages, plan, settings)
