"""An in-memory ``PageReader``: pages as a dict, for tests and dry runs without a web site.

It honours the same contract as ``HttpPageReader`` (``tests/contract/test_pages_port.py``):
one observation per target, in order; each distinct URL read once; a missing page reads as
status 404; nothing is ever written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tminus.domain.pages import PageObservation, PageTarget


class MemoryPages:
    """Pages by URL: a text (the page answers 200 with it as its visible text) or a status
    (a 2xx answers with an empty page; any other is a page that cannot be read). A URL not in
    ``pages`` answers 404.
    ``reads`` lists the URLs read, in the order they were read."""

    def __init__(self, pages: Mapping[str, str | int] | None = None) -> None:
        self.pages: dict[str, str | int] = dict(pages or {})
        self.reads: list[str] = []

    def read(self, targets: Sequence[PageTarget]) -> list[PageObservation]:
        seen: dict[str, PageObservation] = {}
        for target in targets:
            if target.url not in seen:
                seen[target.url] = self._read(target.url)
        return [seen[t.url] for t in targets]

    def _read(self, url: str) -> PageObservation:
        self.reads.append(url)
        page = self.pages.get(url, 404)
        if isinstance(page, str):
            return PageObservation(url, 200, url, page)
        if 200 <= page < 300:
            return PageObservation(url, page, url, "")
        return PageObservation(url, page, url, None, f"status {page}")
