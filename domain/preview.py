"""A merge request's plan preview (pure): what merging it would change, launch by launch.

The ``preview`` flow dry-runs every launch file a merge request affects and renders the
results here as one merge request comment (found again by ``PREVIEW_MARKER``) and one commit
status; ``tminus preview FILE...`` prints the same text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tminus.domain.request import LaunchRequest
from tminus.domain.results import ActionResult, Outcome

PREVIEW_MARKER = "<!-- tminus:preview -->"
STATUS_NAME = "tminus/preview"
# GitLab refuses notes over 1,000,000 characters; a preview stays well under it.
MAX_ROWS_PER_LAUNCH = 60
MAX_CHARS = 200_000

_VERB = {
    Outcome.created: "create",
    Outcome.updated: "update",
    Outcome.closed: "close",
    Outcome.failed: "fail",
    Outcome.skipped: "skip",
    Outcome.unchanged: "keep",
}
_SYSTEM = {
    "calendar": "Calendar",
    "page": "Page check",
    "sales": "Sales",
    "labels": "Labels",
    "links": "Links",
    "dropped": "Issue (no longer planned)",
}


@dataclass(frozen=True)
class LaunchPreview:
    """One launch file's part of a preview: its dry-run rows, or why it cannot run."""

    path: str
    request: LaunchRequest | None = None
    results: tuple[ActionResult, ...] = ()
    problems: tuple[str, ...] = ()  # the file is invalid, or the dry run failed: nothing runs
    warnings: tuple[str, ...] = ()
    cancelled: bool = False  # the file was deleted: its launch would be cancelled

    @property
    def changes(self) -> list[ActionResult]:
        return [r for r in self.results if r.outcome not in (Outcome.unchanged,)]

    @property
    def ok(self) -> bool:
        return not self.problems and not any(r.outcome is Outcome.failed for r in self.results)


@dataclass(frozen=True)
class Preview:
    """Everything a merge request (or ``tminus preview``) would change."""

    source: str  # e.g. "!12 at 1a2b3c4d" or "local files"
    launches: tuple[LaunchPreview, ...]
    playbook_changed: bool = False
    playbook_problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.playbook_problems and all(launch.ok for launch in self.launches)

    def status(self) -> tuple[str, str]:
        """The commit status: (state, description)."""
        bad = [lp.path for lp in self.launches if not lp.ok]
        if self.playbook_problems:
            return "failed", "playbook.yaml is invalid: see the tminus preview comment"
        if bad:
            return "failed", f"{len(bad)} launch file(s) invalid or failing: " + ", ".join(bad)
        n = sum(len(lp.changes) for lp in self.launches)
        return "success", f"{len(self.launches)} launch(es) checked, {n} change(s) on merge"


def same_slugs(launches: list[LaunchPreview]) -> list[LaunchPreview]:
    """Two files for one launch would overwrite each other's issues: both are refused. A
    launch whose file was deleted and which another file still defines (a move) is not
    cancelled."""
    paths: dict[str, list[str]] = {}
    for lp in launches:
        if lp.request is not None and not lp.cancelled:
            paths.setdefault(lp.request.slug, []).append(lp.path)
    out = []
    for lp in launches:
        slug = lp.request.slug if lp.request is not None else None
        if lp.cancelled:
            if slug not in paths:
                out.append(lp)
            continue
        same = paths.get(slug, []) if slug else []
        if len(same) > 1:
            problem = f"slug {slug!r} is used by {', '.join(same)}; give each its own slug"
            lp = LaunchPreview(lp.path, lp.request, problems=(*lp.problems, problem))
        out.append(lp)
    return out


_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\`*_[]()!#~$"})


def _cell(text: str) -> str:
    """Text from a launch file made inert in a markdown table cell of a GitLab comment: no
    HTML, no pipes, no links, images, code spans or emphasis, and no mention (an ``@`` is
    followed by a word joiner, so ``@all`` notifies nobody)."""
    flat = " ".join(text.split())
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return flat.translate(_MARKDOWN).replace("|", "\\|").replace("@", "@\u2060")


def _code(text: str) -> str:
    """Text as an inline code span (nothing inside is markdown; no backtick can end it)."""
    return "`" + " ".join(text.split()).replace("`", "'") + "`"


def _row(res: ActionResult) -> str:
    what = _SYSTEM.get(res.kind, f"Issue ({res.kind})")
    title = _cell(res.title)
    if res.url and res.url.startswith(("https://", "http://")):
        title = f"[{title}](<{res.url.replace('>', '%3E').replace(' ', '%20')}>)"
    return f"| {_VERB[res.outcome]} | {what} | {title} | {_cell(res.detail)} |"


def _launch_section(lp: LaunchPreview) -> list[str]:
    path = _code(lp.path)
    r = lp.request
    if lp.cancelled:
        name = f"launch `{r.slug}`" if r else "its launch"
        return [
            f"#### {path}: deleted",
            "",
            f"Merging cancels {name}: the tracking issue gets the cancelled label and a "
            "comment; nothing is deleted.",
        ]
    head = f"#### {path}"
    if r is not None:
        head += f": `{r.slug}`, {_cell(r.title)} ({r.tier.value}, {r.launch_date})"
    lines = [head, ""]
    if lp.problems:
        lines.append("❌ **Not valid: merging would not run this launch.**")
        lines.append("")
        lines += [f"- {_cell(p)}" for p in lp.problems]
        return lines
    lines += [f"- ⚠ {_cell(w)}" for w in lp.warnings]
    changes = lp.changes
    unchanged = len(lp.results) - len(changes)
    if not changes:
        lines.append(f"No change: all {unchanged} items already match.")
        return lines
    lines += ["| change | what | item | detail |", "|---|---|---|---|"]
    lines += [_row(res) for res in changes[:MAX_ROWS_PER_LAUNCH]]
    if len(changes) > MAX_ROWS_PER_LAUNCH:
        lines.append(f"| … | | {len(changes) - MAX_ROWS_PER_LAUNCH} more changes | |")
    if unchanged:
        lines += ["", f"{unchanged} other items already match."]
    return lines


def summary(preview: Preview) -> str:
    counts: dict[str, int] = {}
    for lp in preview.launches:
        for res in lp.changes:
            verb = _VERB[res.outcome]
            counts[verb] = counts.get(verb, 0) + 1
    moved = sum(
        1
        for lp in preview.launches
        for res in lp.changes
        if "date " in res.detail and " -> " in res.detail
    )
    parts = [f"{n} to {verb}" for verb, n in sorted(counts.items())]
    if moved:
        parts.append(f"{moved} date(s) moved")
    invalid = sum(1 for lp in preview.launches if not lp.ok)
    if invalid:
        parts.append(f"{invalid} launch file(s) invalid or failing")
    cancelled = sum(1 for lp in preview.launches if lp.cancelled)
    if cancelled:
        parts.append(f"{cancelled} launch(es) cancelled")
    n = len(preview.launches)
    return f"{n} launch file(s): " + (", ".join(parts) if parts else "no change")


def preview_markdown(preview: Preview) -> str:
    """The comment: a marker to find it again, a summary, then one section per launch."""
    state, _ = preview.status()
    icon = "✅" if state == "success" else "❌"
    lines = [
        PREVIEW_MARKER,
        f"### {icon} tminus plan preview",
        "",
        f"What merging would do ({preview.source}), from a dry run against GitLab, the "
        "launch calendar and the pages. Nothing has been written.",
        "",
        f"**{summary(preview)}**",
    ]
    if preview.playbook_changed:
        lines += ["", "`playbook.yaml` changed: every launch file is previewed with it."]
    if preview.playbook_problems:
        lines += ["", "❌ **`playbook.yaml` is not valid; no launch would run with it:**", ""]
        lines += [f"- {_cell(p)}" for p in preview.playbook_problems]
    lines += [f"- {_cell(n)}" for n in preview.notes]
    for lp in preview.launches:
        lines += ["", *_launch_section(lp)]
    text = "\n".join(lines) + "\n"
    if len(text) > MAX_CHARS:
        cut = text[:MAX_CHARS].rsplit("\n", 1)[0]
        text = cut + "\n\n… (cut: the preview is longer than a comment should be)\n"
    return text
