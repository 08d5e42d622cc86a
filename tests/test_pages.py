"""Page checks over real HTTP against the docs-site stand-in.

Names like ``a.test`` resolve (through the checker's resolver hook) to 127.0.0.1, so host
allow-lists, per-host limits and redirects between hosts are tested without DNS or traffic
beyond the loopback. The in-flight counter wraps the whole app, so it sees the latency the
fault injection adds.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import socket
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tminus.domain.pages import PageResult, PageTarget, check_results, judge_all, page_targets
from tminus.domain.planner import plan_launch
from tminus.domain.playbook import Playbook
from tminus.domain.request import LaunchRequest
from tminus.domain.results import Outcome
from tminus.integrations.pages import (
    HttpPageReader,
    PageReader,
    host_allowed,
    refused_address,
    visible_text,
)
from tminus_sandbox.app import ThreadedServer
from tminus_sandbox.control import Control, ControlMiddleware, control_routes
from tminus_sandbox.docs_site import docs_site_routes

from .conftest import TODAY


class InFlight:
    """Counts requests being served, in total and per Host header, and keeps the maxima."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.reset()

    def reset(self) -> None:
        self.now = 0
        self.max = 0
        self.now_host: Counter[str] = Counter()
        self.max_host: Counter[str] = Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            await self.app(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode().split(":")[0]
        self.now += 1
        self.now_host[host] += 1
        self.max = max(self.max, self.now)
        self.max_host[host] = max(self.max_host[host], self.now_host[host])
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1
            self.now_host[host] -= 1


class Site:
    def __init__(self, url: str, inflight: InFlight) -> None:
        self.url = url
        self.port = httpx.URL(url).port
        self.inflight = inflight
        self.http = httpx.Client(base_url=url, timeout=10)

    def at(self, host: str, path: str) -> str:
        return f"http://{host}:{self.port}{path}"

    def faults(self, **faults: Any) -> None:
        self.http.put("/_sandbox/faults", json=faults).raise_for_status()

    def paths(self) -> list[str]:
        return [r["path"] for r in self.http.get("/_sandbox/requests").json()]


async def go(request: Request) -> Response:
    """An open redirect, as real sites have: sends the client wherever ``to`` says."""
    return RedirectResponse(request.query_params["to"], status_code=302)


BUSY: Counter[str] = Counter()


async def busy(request: Request) -> Response:
    """Busy on the first request for each ``n``: 503 with ``Retry-After`` as an HTTP date 2 s
    ahead (so the wait it asks for is over 1 s); then the page."""
    BUSY[request.query_params["n"]] += 1
    if BUSY[request.query_params["n"]] == 1:
        when = email.utils.formatdate(time.time() + 2, usegmt=True)
        return Response("busy", status_code=503, headers={"Retry-After": when})
    return Response("<p>Merge trains</p>", media_type="text/html")


@pytest.fixture(scope="module")
def site_server() -> Iterator[Site]:
    control = Control()
    app = Starlette(
        routes=[
            *docs_site_routes(),
            Route("/go", go),
            Route("/busy", busy),
            *control_routes(control, lambda: None),
        ]
    )
    inflight = InFlight(ControlMiddleware(app, control))
    with ThreadedServer(inflight) as server:
        site = Site(server.url, inflight)
        yield site
        site.http.close()


@pytest.fixture
def site(site_server: Site) -> Site:
    deadline = time.monotonic() + 5
    while site_server.inflight.now and time.monotonic() < deadline:
        time.sleep(0.02)  # a timed-out request of the previous test is still being served
    site_server.http.post("/_sandbox/reset").raise_for_status()
    site_server.inflight.reset()
    return site_server


NAMES = {
    "a.test": ["127.0.0.1"],
    "b.test": ["127.0.0.1"],
    "docs.internal": ["10.0.0.1"],
    "mixed.test": ["93.184.216.34", "10.1.2.3"],
}


async def fake_dns(host: str, port: int) -> list[str]:
    """A resolver that never leaves the process: the table above, or IP literals."""
    if host in NAMES:
        return NAMES[host]
    try:
        socket.inet_pton(socket.AF_INET, host)
        return [host]
    except OSError:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None


def checker(**kw: Any) -> HttpPageReader:
    kw.setdefault("allowed_hosts", ["127.0.0.1:*", "a.test:*", "b.test:*"])
    kw.setdefault("allow_private", True)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("retry_delay", 0.01)
    return HttpPageReader(resolver=fake_dns, **kw)


def check(reader: PageReader, targets: list[PageTarget]) -> list[PageResult]:
    """A page check as the task runs it: the reader observes, the domain judges."""
    return judge_all(targets, reader.read(targets))


def on_site(request: LaunchRequest, site: Site) -> LaunchRequest:
    """The example launch with its URLs pointing at this test's stand-in."""
    raw = request.model_dump_json().replace("127.0.0.1:4281", f"127.0.0.1:{site.port}")
    return LaunchRequest.model_validate_json(raw)


# --- the L1 example against the stand-in ----------------------------------------------------


def test_l1_pages(site: Site, l1: LaunchRequest, playbook: Playbook) -> None:
    plan = plan_launch(on_site(l1, site), playbook, TODAY)
    targets = page_targets(plan, site.at("127.0.0.1", "/features"), site.url + "/features/compare")
    results = check(checker(), targets)
    by_path = {httpx.URL(r.url).path: r for r in results}

    agent = by_path["/docs/code-review-agent"]
    assert (agent.ok, agent.status, agent.reason) == (True, 200, "ok: mentions 'Code Review Agent'")

    policies = by_path["/docs/review-policies"]  # exists, but only its markup names the feature
    assert (policies.ok, policies.status) == (False, 200)
    assert policies.reason == "not mentioned (looked for 'Review policies')"

    for path in ("/features", "/features/compare"):
        page = by_path[path]
        assert not page.ok
        assert page.reason == (
            "not mentioned: 'Review policies' (looked for 'AI code review', 'Review policies')"
        )

    rows = check_results(results)
    assert [r.key for r in rows] == [f"check:{t.url}" for t in targets]
    assert [r.outcome for r in rows] == [Outcome.unchanged] + [Outcome.failed] * 3
    assert rows[0].kind == "page" and rows[0].detail == "ok: mentions 'Code Review Agent'"
    assert rows[1].detail == policies.reason and rows[1].url == policies.url


def test_each_url_is_fetched_once(site: Site) -> None:
    url = site.at("127.0.0.1", "/features")
    results = check(
        checker(),
        [
            PageTarget(url, "AI", ("AI code review",)),
            PageTarget(url, "Dark", ("dark MODE",)),  # case and spacing do not matter
            PageTarget(url, "Nope", ("Review policies", "Code review policies")),
        ],
    )
    assert [r.ok for r in results] == [True, True, False]
    assert results[2].reason == (
        "not mentioned (looked for 'Review policies' or 'Code review policies')"
    )
    assert site.paths() == ["/features"]


# --- what counts as text --------------------------------------------------------------------


def test_hidden_markup_does_not_count() -> None:
    html = """<html><head><title>Merge trains</title><style>p::after{content:"Merge trains"}
    </style><script>var f = "Merge trains";</script><meta content="Merge trains"></head>
    <body><!-- Merge trains --><p title="Merge trains" data-x='Merge trains'>Merge</p>
    <p>trains</p><template>Merge trains</template><img alt="Merge trains"></body></html>"""
    text = visible_text(html)
    assert text == "Merge trains"  # two paragraphs: the words are separate, not joined
    assert visible_text("<p>Code <b>Review</b>&nbsp;Agent &amp; co</p>") == "Code Review Agent & co"
    assert visible_text("<p>Re<b>view</b></p>") == "Review"


def test_features_page_ignores_script_data(site: Site) -> None:
    # Every page of the stand-in carries "Review policies" in JSON-LD, a script, CSS, a comment
    # and attributes; the positive control shows the same page does pass for a visible name.
    url = site.at("a.test", "/features")
    results = check(
        checker(),
        [
            PageTarget(url, "visible", ("Merge trains",)),
            PageTarget(url, "hidden", ("Review policies",)),
        ],
    )
    assert [r.ok for r in results] == [True, False]


# --- redirects ------------------------------------------------------------------------------


def test_redirect_is_followed(site: Site) -> None:
    [result] = check(
        checker(), [PageTarget(site.at("a.test", "/docs/moved"), "moved", ("Merge trains",))]
    )
    assert result.ok and result.status == 200
    assert result.final_url == site.at("a.test", "/docs/merge-trains")
    assert site.paths() == ["/docs/moved", "/docs/merge-trains"]


def test_redirect_loop_stops(site: Site) -> None:
    [result] = check(checker(), [PageTarget(site.at("a.test", "/docs/loop"), "loop", ("x",))])
    assert not result.ok and result.reason == "too many redirects (more than 5)"
    assert site.paths() == ["/docs/loop"] * 6


def test_redirect_to_a_host_outside_the_allow_list_is_not_followed(site: Site) -> None:
    target = site.at("b.test", "/docs/dark-mode")
    [result] = check(
        checker(allowed_hosts=["a.test:*"]),
        [PageTarget(site.at("a.test", f"/go?to={target}"), "go", ("Dark mode",))],
    )
    assert not result.ok
    assert result.reason == (
        f"host not allowed: b.test:{site.port} (add it to TMINUS_PAGES_ALLOWED_HOSTS)"
    )
    assert result.final_url == target
    assert site.paths() == ["/go"]


# --- refusals happen before any request -----------------------------------------------------


def test_private_address_is_refused_unfetched(site: Site) -> None:
    targets = [
        PageTarget(site.at("127.0.0.1", "/docs/dark-mode"), "loopback", ("Dark mode",)),
        PageTarget(site.at("docs.internal", "/docs/dark-mode"), "private", ("Dark mode",)),
        PageTarget(site.at("mixed.test", "/docs/dark-mode"), "one bad address", ("Dark mode",)),
    ]
    strict = HttpPageReader(
        ["127.0.0.1:*", "docs.internal:*", "mixed.test:*"], allow_private=False, resolver=fake_dns
    )
    results = check(strict, targets)
    assert [r.reason.split(" (")[0] for r in results] == [
        "refused: private address 127.0.0.1",
        "refused: private address 10.0.0.1",
        "refused: private address 10.1.2.3",
    ]
    assert all(r.status is None for r in results)
    assert site.paths() == []
    # The real resolver path (loop.getaddrinfo) refuses the literal just the same.
    real = check(HttpPageReader(["127.0.0.1:*"], allow_private=False), targets[:1])
    assert real[0].reason.startswith("refused: private address 127.0.0.1")
    assert site.paths() == []


def test_host_outside_allow_list_is_refused_unfetched(site: Site) -> None:
    [result] = check(
        checker(allowed_hosts=["*.example.com"]),
        [PageTarget(site.at("a.test", "/docs/dark-mode"), "a", ("Dark mode",))],
    )
    assert result.reason == (
        f"host not allowed: a.test:{site.port} (add it to TMINUS_PAGES_ALLOWED_HOSTS)"
    )
    assert site.paths() == []


def test_allow_list_and_address_rules() -> None:
    assert host_allowed("docs.example.com", ["*.example.com"])
    assert host_allowed("a.b.example.com", ["*.example.com"])
    assert not host_allowed("example.com", ["*.example.com"])
    assert not host_allowed("evilexample.com", ["*.example.com"])
    assert host_allowed("Docs.Example.com.", ["docs.example.com"])
    assert host_allowed("docs.example.com", ["https://docs.example.com/"])
    assert not host_allowed("docs.example.com", [])
    assert refused_address("93.184.216.34") is None
    assert refused_address("2606:2800:220:1::1") is None
    for bad in (
        "10.0.0.1",
        "127.0.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:10.0.0.1",
        "224.0.0.1",
        "240.0.0.1",
    ):
        assert refused_address(bad), bad


# --- failures are results -------------------------------------------------------------------


def test_404_size_type_and_dns(site: Site) -> None:
    results = check(
        checker(max_bytes=400, allowed_hosts=["a.test:*", "nowhere.test:*"]),
        [
            PageTarget(site.at("a.test", "/docs/nope"), "404", ("x",)),
            PageTarget(site.at("a.test", "/features"), "big", ("AI code review",)),
            PageTarget(site.at("a.test", "/docs/manual.pdf"), "pdf", ("Merge trains",)),
            PageTarget(site.at("nowhere.test", "/"), "dns", ("x",)),
        ],
    )
    reasons = [(r.status, r.reason) for r in results]
    assert reasons[0] == (404, "status 404")
    assert reasons[1] == (200, "too large (over 400 bytes)")
    assert reasons[2] == (200, "not HTML/text content type (application/pdf)")
    assert reasons[3][1].startswith("cannot resolve nowhere.test")
    assert all(not r.ok for r in results)


def test_timeout_is_a_result(site: Site) -> None:
    # Control's latency applies to every path, so every page is slow here.
    site.faults(latency_ms=600)
    started = time.monotonic()
    results = check(
        checker(timeout=0.2),
        [PageTarget(site.at("a.test", f"/docs/dark-mode?n={i}"), "slow", ("x",)) for i in range(3)],
    )
    assert [(r.status, r.reason) for r in results] == [(None, "timeout after 0.2s")] * 3
    assert time.monotonic() - started < 0.55  # concurrent, not one after the other


def test_server_errors_are_tried_again(site: Site) -> None:
    # A seed whose first draw fails (< 0.5) and second passes: one 502, then the page.
    seed = next(s for s in range(1000) if (r := random.Random(s)).random() < 0.5 <= r.random())
    site.faults(error_rate=0.5, seed=seed, prefix="/docs/")
    target = PageTarget(site.at("a.test", "/docs/dark-mode"), "d", ("Dark mode",))
    [result] = check(checker(), [target])
    assert result.ok and site.paths() == ["/docs/dark-mode"] * 2
    site.faults(error_rate=1.0, prefix="/docs/")
    [result] = check(checker(retries=2), [target])
    assert (result.ok, result.status, result.reason) == (False, 502, "status 502")
    assert site.paths() == ["/docs/dark-mode"] * 5  # 2 before, then 1 + 2 retries


def test_retry_after_as_an_http_date_is_honoured(site: Site) -> None:
    target = PageTarget(site.at("a.test", f"/busy?n={time.monotonic_ns()}"), "b", ("Merge trains",))
    started = time.monotonic()
    [result] = check(checker(retry_delay=0.01), [target])
    assert result.ok and site.paths() == ["/busy"] * 2
    assert time.monotonic() - started > 0.9  # the date's wait, not retry_delay


def test_connection_refused_is_a_result() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        [result] = check(checker(), [PageTarget(f"http://127.0.0.1:{port}/docs", "down", ("x",))])
    assert not result.ok and result.reason.startswith("cannot connect to 127.0.0.1")


# --- concurrency ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("concurrency", "per_host", "max_total", "max_per_host"),
    [(3, 2, 3, 2), (8, 1, 2, 1)],
)
def test_concurrency_bounds(
    site: Site, concurrency: int, per_host: int, max_total: int, max_per_host: int
) -> None:
    site.faults(latency_ms=150, prefix="/docs/")
    targets = [
        PageTarget(site.at(host, f"/docs/dark-mode?n={i}"), f"{host} {i}", ("Dark mode",))
        for host in ("a.test", "b.test")
        for i in range(5)
    ]
    results = check(checker(concurrency=concurrency, per_host=per_host), targets)
    assert all(r.ok for r in results), [r.reason for r in results]
    assert site.inflight.max == max_total
    assert dict(site.inflight.max_host) == {"a.test": max_per_host, "b.test": max_per_host}


def test_read_inside_a_running_loop(site: Site) -> None:
    async def from_async_code() -> bool:
        [result] = check(
            checker(), [PageTarget(site.at("a.test", "/docs/dark-mode"), "d", ("Dark mode",))]
        )
        return result.ok

    assert asyncio.run(from_async_code())


def test_the_allow_list_checks_the_port() -> None:
    """A host entry allows its default ports only: a launch file must not reach another
    service on the same host (the Prefect API beside the stand-in, say)."""
    assert host_allowed("docs.example.com", ["docs.example.com"], 443)
    assert host_allowed("docs.example.com", ["docs.example.com"], 80)
    assert not host_allowed("docs.example.com", ["docs.example.com"], 8080)
    assert host_allowed("127.0.0.1", ["127.0.0.1:4281"], 4281)
    assert not host_allowed("127.0.0.1", ["127.0.0.1:4281"], 4280)
    assert not host_allowed("127.0.0.1", ["127.0.0.1:4281"], 80)
    assert host_allowed("a.example.com", ["*.example.com:8443"], 8443)
    assert host_allowed("docs.test", ["docs.test:*"], 9)
    assert host_allowed("docs.example.com", ["https://docs.example.com:8443/"], 8443)
    assert not host_allowed("docs.example.com", ["https://docs.example.com/"], 8443)


def listening() -> tuple[socket.socket, list[int]]:
    """A loopback port that counts connections without answering them."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    return server, []


def connections(server: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return count
        conn.close()
        count += 1


def test_embedded_default_reaches_only_the_stand_in() -> None:
    """On the embedded default private addresses are allowed for the stand-in's origin only,
    and TMINUS_PAGES_ALLOW_PRIVATE=false is honoured: then not even that one."""
    from tminus.integrations.clients import build_page_reader
    from tminus.settings import load_settings

    other, _ = listening()
    port = other.getsockname()[1]
    try:
        env = {"TMINUS_SANDBOX_PORT": str(port)}
        embedded = load_settings(env)
        assert embedded.page_hosts == [f"127.0.0.1:{port}"]
        assert embedded.page_private_origins == [f"127.0.0.1:{port}"]
        assert not embedded.page_private_ok
        # Another loopback port (the Prefect API, an admin console) is not allowed.
        prefect = f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}/api/health"
        [refused] = check(build_page_reader(embedded), [PageTarget(prefect, "p", ("x",))])
        assert refused.reason.startswith("host not allowed: 127.0.0.1:")

        strict = load_settings({**env, "TMINUS_PAGES_ALLOW_PRIVATE": "false"})
        assert strict.page_private_origins == [] and not strict.page_private_ok
        target = PageTarget(f"http://127.0.0.1:{port}/docs/x", "docs", ("x",))
        [result] = check(build_page_reader(strict), [target])
        assert result.reason.startswith("refused: private address 127.0.0.1")
        assert connections(other) == 0  # refused before connecting
    finally:
        other.close()


def test_known_pages_read_the_shared_pages_once_and_the_rest_each_time() -> None:
    """The audit's reader: /features and its compare view once per audit, docs per launch."""
    from tminus.integrations.pages_memory import MemoryPages
    from tminus.tasks.pages import KnownPages

    features, compare, docs = (
        "https://x.test/features",
        "https://x.test/compare",
        "https://d.test/a",
    )
    web = MemoryPages({features: "Agent", compare: "Agent", docs: "Agent docs"})
    pages = KnownPages.observe(web, (features, compare, None))
    targets = [PageTarget(docs, "docs", ("Agent",)), PageTarget(features, "features", ("Agent",))]
    for _ in range(3):  # three launches
        seen = pages.read([*targets, PageTarget(compare, "compare", ("Agent",))])
        assert [o.url for o in seen] == [docs, features, compare]
        assert [o.status for o in seen] == [200, 200, 200]
    assert Counter(web.reads) == {features: 1, compare: 1, docs: 3}
    assert KnownPages.observe(web, (None, None)).read([]) == []
