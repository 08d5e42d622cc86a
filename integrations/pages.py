"""Reading pages for the page checks: the adapter observes, ``tminus.domain.pages`` judges.

``PageReader`` is the port: ``read(targets)`` returns one ``PageObservation`` per target, in
order (the page's visible text, or why it could not be read), and never writes anything.
``HttpPageReader`` reads over HTTP; ``tminus.integrations.pages_memory.MemoryPages`` is the
in-memory fake that honours the same contract.

The URLs come from launch files, which anyone who can open a merge request may write, so a
check must not become a way to make tminus fetch internal services (SSRF). Three guards, on
every hop of a redirect chain, before any byte is sent:

- the host *and port* must be in an allow-list (exact names, or ``*.example.com`` wildcards;
  an entry without a port allows only the scheme's default port, ``host:8080`` that port,
  ``host:*`` any port);
- every address the host resolves to must be public (private, loopback, link-local,
  reserved, multicast and other non-global addresses are refused unless ``allow_private``,
  or unless the URL's origin is one of ``private_origins``: the embedded stand-in's exact
  ``127.0.0.1:port``, never all of loopback);
- the request goes to the address that was checked (the URL is pinned to it; ``Host`` and
  TLS SNI keep the name), so a DNS answer that changes between check and connect cannot
  redirect it elsewhere. Environment proxies are ignored for the same reason.

The text of a page is its *visible text* (not tags, scripts, styles, comments or attribute
values): a feature named only in markup is not mentioned. Every page that cannot be read is an
observation with a reason a PMM can act on, never an exception: one broken page must not hide
the others.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from tminus.domain.pages import PageObservation, PageTarget
from tminus.integrations.retry import parse_retry_after

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_WAIT = 5.0  # a page check is not worth a long wait; the next run checks again
TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain")
USER_AGENT = "tminus-page-check/0.1 (+launch readiness check)"

Resolver = Callable[[str, int], Awaitable[list[str]]]


class PageReader(Protocol):
    """What page checks need from the web: read pages, write nothing."""

    def read(self, targets: Sequence[PageTarget]) -> list[PageObservation]:
        """One observation per target, in order: ``status``, ``final_url`` and the page's
        visible ``text``, or no text and a ``reason``. A missing page reads as status 404."""
        ...


@dataclass(frozen=True)
class _Fetched:
    """One URL fetched (after redirects): its text, or why there is none."""

    status: int | None
    final_url: str | None
    text: str | None
    error: str | None
    retry_after: float | None = None  # set when trying again may help (429, 5xx, no connection)

    def observation(self, url: str) -> PageObservation:
        return PageObservation(url, self.status, self.final_url, self.text, self.error)


class _Refused(Exception):
    """A hop that must not be fetched; the message is the result's reason."""


# --- text extraction ------------------------------------------------------------------------

# Inline elements do not separate words ("Merge <b>trains</b>"); every other tag does.
_INLINE = frozenset(
    {"a", "abbr", "b", "bdi", "bdo", "cite", "code", "data", "dfn", "em", "i", "kbd", "mark"}
    | {"q", "s", "samp", "small", "span", "strong", "sub", "sup", "time", "u", "var", "wbr"}
)
# Content that is not shown as page text. <title> names the tab, it does not describe the
# feature, so a page whose only mention is its title does not pass.
_HIDDEN = frozenset({"script", "style", "template", "title", "noscript"})


class _TextExtractor(HTMLParser):
    """Collects the visible text: data outside hidden elements; comments and attributes are
    never data for HTMLParser, so they are dropped by construction."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag not in _INLINE:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag not in _INLINE:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _INLINE:  # <br/>, <script/>: no content, no depth change
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def visible_text(html: str) -> str:
    """The text a reader sees on an HTML page, whitespace-normalised (case kept)."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return " ".join("".join(parser.parts).split())


# --- host and address policy ----------------------------------------------------------------


def _split_entry(entry: str) -> tuple[str, str | None]:
    """An allow-list entry as (host, port): port None = the default port, "*" = any."""
    entry = entry.strip().lower()
    if "://" in entry:  # tolerate a URL where a host was meant
        parts = urlsplit(entry)
        return (parts.hostname or "").rstrip("."), str(parts.port) if parts.port else None
    host, sep, port = entry.rpartition(":")
    if sep and (port == "*" or port.isdigit()) and host and "]" not in port:
        return host.strip("[]").rstrip("."), port
    return entry.strip("[]").rstrip("."), None


def host_allowed(host: str, allowed_hosts: Iterable[str], port: int | None = None) -> bool:
    """Exact names, or ``*.example.com`` for any subdomain (not example.com itself); with
    ``port``, the entry's port must match too (``None`` in an entry: a default port only)."""
    host = host.lower().rstrip(".")
    for entry in allowed_hosts:
        name, entry_port = _split_entry(entry)
        if not name:
            continue
        if port is not None and entry_port != "*":
            if entry_port is None and port not in (80, 443):
                continue
            if entry_port is not None and entry_port != str(port):
                continue
        if name.startswith("*."):
            if host.endswith(name[1:]) and host != name[2:]:
                return True
        elif host == name:
            return True
    return False


def refused_address(address: str) -> str | None:
    """Why an address must not be fetched, or None when it is a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        or not ip.is_global
    ):
        return f"refused: private address {ip} (TMINUS_PAGES_ALLOW_PRIVATE allows it)"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order, without duplicates."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


# --- the reader -----------------------------------------------------------------------------


class HttpPageReader:
    """Reads pages over HTTP concurrently (bounded globally and per host): a ``PageReader``.

    A page answering 429 or 5xx, or refusing the connection, is tried again ``retries`` times
    (after ``Retry-After``, in seconds or as a date, else ``retry_delay``; at most 5 s): a page
    that cannot be read is an observation, not an exception, and these are the only retries of
    a page check (its task does not retry). Timeouts are not retried.

    ``resolver`` is for tests that need names (``docs.test``) without a DNS server; it must
    behave like ``getaddrinfo``: return addresses, raise ``OSError`` when there are none.
    """

    def __init__(
        self,
        allowed_hosts: list[str],
        allow_private: bool = False,
        concurrency: int = 8,
        per_host: int = 2,
        timeout: float = 10.0,
        max_bytes: int = 2_000_000,
        *,
        retries: int = 2,
        retry_delay: float = 0.5,
        resolver: Resolver | None = None,
        private_origins: Iterable[str] = (),
    ) -> None:
        if concurrency < 1 or per_host < 1:
            raise ValueError("concurrency and per_host must be at least 1")
        self.allowed_hosts = list(allowed_hosts)
        self.allow_private = allow_private
        self.private_origins = list(private_origins)
        self.concurrency = concurrency
        self.per_host = per_host
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.retries = max(0, retries)
        self.retry_delay = retry_delay
        self.resolve = resolver or system_resolver

    def read(self, targets: Sequence[PageTarget]) -> list[PageObservation]:
        """``aread`` from synchronous code (a Prefect task in a worker thread).

        When the calling thread already runs an event loop, the reading runs on a thread of
        its own instead of failing with "asyncio.run() cannot be called from a running loop".
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.aread(targets))
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self.aread(targets)).result()

    async def aread(self, targets: Sequence[PageTarget]) -> list[PageObservation]:
        """One observation per target, in order. Each distinct URL is fetched once."""
        urls = list(dict.fromkeys(t.url for t in targets))
        run = _Run(self)
        try:
            fetched = await asyncio.gather(*(run.fetch(url) for url in urls))
        finally:
            await run.aclose()
        by_url = {url: f.observation(url) for url, f in zip(urls, fetched, strict=True)}
        return [by_url[t.url] for t in targets]


class _Run:
    """The state of one ``aread`` call: semaphores and clients bound to its event loop."""

    def __init__(self, reader: HttpPageReader) -> None:
        self.c = reader
        self.slots = asyncio.Semaphore(reader.concurrency)
        self.host_slots: dict[str, asyncio.Semaphore] = {}
        # One client per host name: connections are pinned to addresses, and a pooled TLS
        # connection verified for one name must not carry requests for another on the same IP.
        self.clients: dict[str, httpx.AsyncClient] = {}

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    def _client(self, host: str) -> httpx.AsyncClient:
        if host not in self.clients:
            self.clients[host] = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,  # a proxy would resolve names itself, past the address check
                timeout=self.c.timeout,
                headers={"User-Agent": USER_AGENT, "Accept": "text/html,text/plain;q=0.9"},
            )
        return self.clients[host]

    async def fetch(self, url: str) -> _Fetched:
        """Follow ``url``; try again (outside the slots) when the failure may pass."""
        for attempt in range(self.c.retries + 1):
            result = await self._follow(url)
            if result.retry_after is None or attempt == self.c.retries:
                return result
            await asyncio.sleep(min(result.retry_after, MAX_RETRY_WAIT))
        raise AssertionError("unreachable")

    async def _follow(self, url: str) -> _Fetched:
        current: httpx.URL | None = None
        try:
            current = httpx.URL(url)
            for _ in range(MAX_REDIRECTS + 1):
                host = _host(current)
                if host not in self.host_slots:
                    self.host_slots[host] = asyncio.Semaphore(self.c.per_host)
                # Host slot first: a task waiting for a busy host must not hold a global slot.
                async with self.host_slots[host], self.slots:
                    result = await self._hop(current, host)
                if isinstance(result, _Fetched):
                    return result
                current = result
            return _Fetched(
                None, str(current), None, f"too many redirects (more than {MAX_REDIRECTS})"
            )
        except _Refused as exc:
            return _Fetched(None, str(current) if current else None, None, str(exc))
        except httpx.InvalidURL as exc:
            return _Fetched(None, None, None, f"invalid URL ({exc})")

    async def _hop(self, url: httpx.URL, host: str) -> _Fetched | httpx.URL:
        """Vet, then fetch one URL: a result, or the next URL of a redirect."""
        try:
            async with asyncio.timeout(self.c.timeout):
                addresses = await self._vet(url, host)
                return await self._request(url, host, addresses)
        except TimeoutError:
            return _Fetched(None, str(url), None, f"timeout after {self.c.timeout:g}s")

    async def _vet(self, url: httpx.URL, host: str) -> list[str]:
        if url.scheme not in ("http", "https"):
            raise _Refused(f"refused: unsupported URL scheme {url.scheme!r}")
        port = url.port or (443 if url.scheme == "https" else 80)
        if not host_allowed(host, self.c.allowed_hosts, port):
            where = host if port in (80, 443) else f"{host}:{port}"
            raise _Refused(f"host not allowed: {where} (add it to TMINUS_PAGES_ALLOWED_HOSTS)")
        try:
            addresses = await self.c.resolve(host, port)
        except OSError as exc:
            raise _Refused(f"cannot resolve {host} ({exc.strerror or exc})") from None
        if not addresses:
            raise _Refused(f"cannot resolve {host}")
        if not self.c.allow_private and not host_allowed(host, self.c.private_origins, port):
            for address in addresses:
                why = refused_address(address)
                if why:
                    raise _Refused(why)
        return addresses

    async def _request(
        self, url: httpx.URL, host: str, addresses: list[str]
    ) -> _Fetched | httpx.URL:
        client = self._client(host)
        error = "cannot connect"
        for address in addresses:
            request = client.build_request(
                "GET",
                url.copy_with(host=address),
                headers={"Host": url.netloc.decode("ascii")},
                extensions={"sni_hostname": host} if url.scheme == "https" else None,
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError as exc:
                error = f"cannot connect to {host} ({type(exc).__name__})"
                continue  # the next address may answer
            except httpx.TimeoutException:
                raise TimeoutError from None
            except httpx.HTTPError as exc:
                return _Fetched(None, str(url), None, f"request failed ({type(exc).__name__})")
            try:
                return await self._read(url, response)
            except httpx.TimeoutException:
                raise TimeoutError from None
            except httpx.HTTPError as exc:
                return _Fetched(
                    response.status_code, str(url), None, f"reading failed ({type(exc).__name__})"
                )
            finally:
                await response.aclose()
        return _Fetched(None, str(url), None, error, retry_after=self.c.retry_delay)

    async def _read(self, url: httpx.URL, response: httpx.Response) -> _Fetched | httpx.URL:
        status = response.status_code
        if status in REDIRECT_STATUSES:
            location = response.headers.get("location")
            if not location:
                return _Fetched(status, str(url), None, f"status {status} without a Location")
            return url.join(location)
        if not 200 <= status < 300:
            transient = status in TRANSIENT_STATUSES
            wait = _retry_after(response, self.c.retry_delay) if transient else None
            return _Fetched(status, str(url), None, f"status {status}", retry_after=wait)
        ctype = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype not in TEXT_TYPES:
            return _Fetched(
                status, str(url), None, f"not HTML/text content type ({ctype or 'none'})"
            )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.c.max_bytes:
            return _Fetched(status, str(url), None, f"too large (over {self.c.max_bytes} bytes)")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body.extend(chunk)
            if len(body) > self.c.max_bytes:
                return _Fetched(
                    status, str(url), None, f"too large (over {self.c.max_bytes} bytes)"
                )
        try:
            raw = bytes(body).decode(response.charset_encoding or "utf-8", errors="replace")
        except LookupError:  # an unknown charset name
            raw = bytes(body).decode("utf-8", errors="replace")
        text = raw if ctype == "text/plain" else visible_text(raw)
        return _Fetched(status, str(url), text, None)


def _retry_after(response: httpx.Response, default: float) -> float:
    wait = parse_retry_after(response.headers.get("retry-after"))
    return default if wait is None else wait


def _host(url: httpx.URL) -> str:
    """The URL's host as ASCII (IDNA), lowercase, without a trailing dot."""
    return url.raw_host.decode("ascii").lower().rstrip(".")
