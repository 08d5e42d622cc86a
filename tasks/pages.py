"""Prefect task around the docs and /features page checks: observe, then judge."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from tminus.domain.pages import (
    PageObservation,
    PageTarget,
    check_results,
    judge_all,
    page_targets,
)
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


class KnownPages:
    """A ``PageReader`` that answers the URLs it was given observations of and reads the rest
    through ``reader``. The audit reads the /features page and its compare view, which every
    launch checks, once per audit instead of once per launch."""

    def __init__(self, reader: PageReader, known: Iterable[PageObservation]) -> None:
        self.reader = reader
        self.known = {o.url: o for o in known}

    @classmethod
    def observe(cls, reader: PageReader, urls: Iterable[str | None]) -> KnownPages:
        """Read ``urls`` (the ``None`` ones skipped) now; later reads of them are answered."""
        wanted = list(dict.fromkeys(u for u in urls if u))
        targets = [PageTarget(url, url, ()) for url in wanted]
        return cls(reader, reader.read(targets) if targets else [])

    def read(self, targets: Sequence[PageTarget]) -> list[PageObservation]:
        rest = [t for t in targets if t.url not in self.known]
        fetched = iter(self.reader.read(rest) if rest else [])
        return [self.known.get(t.url) or next(fetched) for t in targets]
