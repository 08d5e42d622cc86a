"""A small docs site: docs pages, a /features page with its compare view, and blog posts.

It is what page checks run against locally, so it carries the traps real sites have: feature
names inside ``<script>`` data, CSS, comments, ``alt``/``title``/``content`` attributes and
``<title>``, none of which a reader sees and none of which may count as a mention.

On purpose, ``/docs/review-policies`` exists but does not describe "Review policies" (only its
markup names it), and ``/features`` does not list it: the L1 example launch fails those checks
until someone writes the docs, which is what the checks are for. ``/docs/moved`` redirects,
``/docs/loop`` redirects forever, ``/docs/manual.pdf`` is not HTML.
"""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

# Every page carries this: feature names in script data, CSS and a comment (never counted).
_HEAD_EXTRAS = """<script type="application/ld+json">
{"@type": "TechArticle", "keywords": ["Code Review Agent", "Review policies", "Merge trains",
 "Dark mode", "AI code review"]}
</script>
<script>window.analytics = {features: ["Review policies", "Dark mode"]};</script>
<style>.badge-review-policies::after { content: "Review policies"; }
.theme-dark-mode { color-scheme: dark; }</style>"""

_LAYOUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{title} | Example Docs</title>
<meta name="description" content="{description}">
{head}
</head><body>
<!-- search index: Code Review Agent, Review policies, Merge trains, Dark mode -->
<nav aria-label="Docs"><a href="/docs/code-review-agent">Agents</a> ·
<a href="/docs/merge-trains" title="Merge trains">CI/CD</a> ·
<a href="/docs/dark-mode">Preferences</a> · <a href="/features">Features</a></nav>
<main>
{body}
</main>
<footer><small>Example Docs, a tminus sandbox stand-in.</small></footer>
</body></html>"""


def _page(title: str, body: str, description: str = "") -> HTMLResponse:
    return HTMLResponse(
        _LAYOUT.format(
            title=html.escape(title),
            description=html.escape(description or title),
            head=_HEAD_EXTRAS,
            body=body,
        )
    )


DOCS: dict[str, tuple[str, str]] = {
    "code-review-agent": (
        "Code Review Agent",
        """<h1>Code <em>Review</em> Agent</h1>
<p>The Code Review Agent reviews every merge request within minutes of its creation and
proposes fixes as suggestions the author applies in one click.</p>
<h2>Turn it on</h2>
<ol><li>Open <b>Settings &gt; Merge requests</b>.</li>
<li>Select <b>Enable the Code&nbsp;Review&nbsp;Agent</b>.</li></ol>
<p><img src="/img/agent.png" alt="Screenshot of a review comment"></p>""",
    ),
    # The trap: the page exists, but "Review policies" appears only in its markup.
    "review-policies": (
        "Review policies",
        """<h1 title="Review policies">Agent settings</h1>
<!-- TODO(dana.docs): document Review policies before launch -->
<p>This page is being written. It will explain which projects and branches the agent
covers, and how strict it is.</p>
<p><img src="/img/policies.png" alt="Review policies screen"
 data-feature="Review policies"></p>
<script>document.title = "Review policies";</script>""",
    ),
    "merge-trains": (
        "Merge trains",
        """<h1>Merge trains</h1>
<p>Merge trains queue merge requests and test each one against the changes ahead of it,
so the default branch stays green without running every pipeline one after the other.</p>
<table><tr><th>Tier</th><td>Premium, Ultimate</td></tr></table>""",
    ),
    "dark-mode": (
        "Dark mode",
        """<h1>Dark  mode</h1>
<p>Switch the whole web UI to a dark theme in <b>Preferences &gt; Appearance</b>.
Dark mode is in beta.</p>""",
    ),
}

# The data file behind /features and its compare view (like features.yml): "Review policies"
# is not in it yet.
FEATURES: list[tuple[str, str, str, tuple[bool, bool, bool]]] = [
    (
        "AI code review",
        "Every merge request reviewed in minutes.",
        "/docs/code-review-agent",
        (False, True, True),
    ),
    (
        "Merge trains",
        "Keep the default branch green.",
        "/docs/merge-trains",
        (False, True, True),
    ),
    ("Dark mode", "A dark theme for the whole UI.", "/docs/dark-mode", (True, True, True)),
]

BLOG: dict[str, tuple[str, str]] = {
    "code-review-agent": (
        "Meet Code Review Agent",
        "Every merge request now gets a first review within minutes.",
    ),
    "merge-trains-ga": ("Merge trains are generally available", "Keep main green, at speed."),
    "dark-mode-beta": ("Dark mode beta", "Easy on the eyes, now for everyone."),
}


async def docs_page(request: Request) -> Response:
    page = request.path_params["page"]
    if page == "moved":
        return RedirectResponse("/docs/merge-trains", status_code=302)
    if page == "loop":
        return RedirectResponse("/docs/loop", status_code=302)
    if page == "manual.pdf":
        return Response(b"%PDF-1.4 Merge trains", media_type="application/pdf")
    if page not in DOCS:
        return HTMLResponse("<h1>Page not found</h1>", status_code=404)
    title, body = DOCS[page]
    return _page(title, body)


async def features_page(request: Request) -> Response:
    items = "\n".join(
        f'<li><a href="{link}"><h3>{html.escape(title)}</h3></a><p>{html.escape(text)}</p></li>'
        for title, text, link, _ in FEATURES
    )
    body = f"""<h1>Features</h1>
<p>Everything in the platform, one page. <a href="/features/compare">Compare plans</a>.</p>
<ul class="features">
{items}
</ul>"""
    return _page("Features", body, "Features: AI code review, Review policies, and more")


async def compare_page(request: Request) -> Response:
    def mark(on: bool) -> str:
        return '<td class="yes">✓</td>' if on else '<td class="no" aria-label="no">—</td>'

    rows = "\n".join(
        f"<tr><th scope=row>{html.escape(title)}</th>{''.join(mark(p) for p in plans)}</tr>"
        for title, _, _, plans in FEATURES
    )
    body = f"""<h1>Compare plans</h1>
<table class="compare">
<thead><tr><th>Feature</th><th>Free</th><th>Premium</th><th>Ultimate</th></tr></thead>
<tbody>
{rows}
<!-- <tr><th>Review policies</th><td></td><td></td><td>✓</td></tr> -->
</tbody></table>"""
    return _page("Compare plans", body)


async def blog_post(request: Request) -> Response:
    slug = request.path_params["slug"]
    if slug not in BLOG:
        return HTMLResponse("<h1>Post not found</h1>", status_code=404)
    title, lede = BLOG[slug]
    body = f"<article><h1>{html.escape(title)}</h1><p>{html.escape(lede)}</p></article>"
    return _page(title, body)


def docs_site_routes() -> list[Route]:
    return [
        Route("/docs/{page}", docs_page, methods=["GET", "HEAD"]),
        Route("/features", features_page, methods=["GET", "HEAD"]),
        Route("/features/compare", compare_page, methods=["GET", "HEAD"]),
        Route("/blog/{slug}", blog_post, methods=["GET", "HEAD"]),
    ]
