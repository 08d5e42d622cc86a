"""The ``PageReader`` contract, run against every implementation: the in-memory fake
(``MemoryPages``) and the real reader (``HttpPageReader``) over HTTP against the sandbox's
docs-site stand-in, reached as the embedded default reaches it (its private origin allowed,
no other private address).

What the port promises: one observation per target, in target order; an existing page is
read with its visible text; a missing page reads as 404 without text; each distinct URL is
read once; reading never writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from tminus.domain.pages import PageTarget, judge_all
from tminus.integrations.pages import HttpPageReader, PageReader
from tminus.integrations.pages_memory import MemoryPages

from ..conftest import SandboxClient

# Pages of the stand-in (tminus_sandbox.docs_site), with a sentence each shows its readers.
MERGE_TRAINS = "/docs/merge-trains"
DARK_MODE = "/docs/dark-mode"
MISSING = "/docs/no-such-page"
SHOWN = {
    MERGE_TRAINS: "Merge trains queue merge requests and test each one",
    DARK_MODE: "Dark mode is in beta.",
}


@dataclass
class World:
    """A reader, and the site it reads as the test sees it."""

    reader: PageReader
    base: str
    served: Callable[[], list[tuple[str, str]]]  # (method, path) of every request served

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def target(self, path: str, *mention: str) -> PageTarget:
        return PageTarget(self.url(path), path, mention)


def memory_world() -> World:
    base = "http://docs.test"
    pages = MemoryPages({f"{base}{path}": f"Docs {text} More." for path, text in SHOWN.items()})
    return World(pages, base, lambda: [("GET", urlsplit(url).path) for url in pages.reads])


def http_world(sandbox: SandboxClient) -> World:
    origin = urlsplit(sandbox.url).netloc
    reader = HttpPageReader(
        allowed_hosts=[origin], private_origins=[origin], timeout=5.0, retry_delay=0.01
    )

    def served() -> list[tuple[str, str]]:
        return [
            (r["method"], r["path"])
            for r in sandbox.requests()
            if not r["path"].startswith("/_sandbox")
        ]

    sandbox.clear_log()
    return World(reader, sandbox.url, served)


@pytest.fixture(params=["memory", "http"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    if request.param == "memory":
        yield memory_world()
    else:
        yield http_world(request.getfixturevalue("sandbox"))


def test_an_existing_page_is_read_with_its_text(world: World) -> None:
    target = world.target(MERGE_TRAINS)
    [seen] = world.reader.read([target])
    assert (seen.url, seen.status, seen.final_url, seen.reason) == (
        target.url,
        200,
        target.url,
        None,
    )
    assert seen.text is not None
    assert SHOWN[MERGE_TRAINS] in " ".join(seen.text.split())
    assert "<" not in seen.text  # the visible text, not the markup


def test_a_missing_page_reads_as_404(world: World) -> None:
    [seen] = world.reader.read([world.target(MISSING)])
    assert (seen.status, seen.text, seen.reason) == (404, None, "status 404")


def test_one_observation_per_target_in_order(world: World) -> None:
    targets = [
        world.target(MISSING),
        world.target(MERGE_TRAINS),
        world.target(DARK_MODE),
        world.target(MERGE_TRAINS),
    ]
    seen = world.reader.read(targets)
    assert [s.url for s in seen] == [t.url for t in targets]
    assert [s.status for s in seen] == [404, 200, 200, 200]
    assert seen[1] == seen[3]
    assert seen[2].text is not None and SHOWN[DARK_MODE] in " ".join(seen[2].text.split())


def test_each_distinct_url_is_read_once(world: World) -> None:
    paths = [MERGE_TRAINS, DARK_MODE, MERGE_TRAINS, MISSING, DARK_MODE]
    world.reader.read([world.target(p) for p in paths])
    assert sorted(path for _, path in world.served()) == sorted(set(paths))


def test_reading_never_writes(world: World) -> None:
    world.reader.read([world.target(p) for p in (MERGE_TRAINS, MISSING, DARK_MODE)])
    served = world.served()
    assert served, "nothing was read"
    assert {method for method, _ in served} <= {"GET", "HEAD"}


def test_no_targets_reads_nothing(world: World) -> None:
    assert world.reader.read([]) == []
    assert world.served() == []


def test_observations_judge_as_a_page_check_expects(world: World) -> None:
    """What the domain needs from a reader: pass on a mention, fail on a miss or a 404."""
    targets = [
        world.target(MERGE_TRAINS, "merge TRAINS"),
        world.target(DARK_MODE, "Merge trains"),
        world.target(MISSING, "Merge trains"),
    ]
    results = judge_all(targets, world.reader.read(targets))
    assert [(r.ok, r.reason) for r in results] == [
        (True, "ok: mentions 'merge TRAINS'"),
        (False, "not mentioned (looked for 'Merge trains')"),
        (False, "status 404"),
    ]
