"""Prefect tasks around the issue tracker: run names, no caching, no business rules (each
GitLab call has its retries in the adapter: ``integrations.retry``).

Nothing here is cached by Prefect on purpose: idempotency comes from looking each issue up in
GitLab by its key, so an issue someone deleted or edited is noticed on the next run.
"""

from __future__ import annotations

import logging

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tminus.domain.issues import (
    CANCELLED_LABEL,
    IssueState,
    IssueTracker,
    IssueWrite,
    diff_issue,
    drop_write,
    fill_refs,
    new_issue,
)
from tminus.domain.plan import IssueSpec, Plan, key_marker_prefix
from tminus.domain.request import LaunchRequest
from tminus.domain.results import ActionResult, Outcome
from tminus.errors import PermanentError


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except Exception:  # called with .fn() outside a run
        return logging.getLogger("tminus")


@task(name="check-gitlab", cache_policy=NO_CACHE)
def check_gitlab(tracker: IssueTracker, plan: Plan) -> dict[str, int]:
    """Read-only pre-flight: the project exists and every person named is a GitLab user.

    Returns username -> user id. Fails before anything is written.
    """
    request = plan.request
    tracker.check_project(request.project)
    people = {"owner": request.owner, **{f"team.{r}": u for r, u in request.team.items()}}
    ids: dict[str, int] = {}
    missing = []
    for field, username in people.items():
        uid = tracker.user_id(username)
        if uid is None:
            missing.append(f"{field}: GitLab has no user {username!r}")
        else:
            ids[username] = uid
    if missing:
        raise PermanentError(
            "GitLab",
            "; ".join(missing) + "; fix the username in the launch request",
            status=404,
            resource="users",
        )
    return ids


@task(name="find-launch-issues", cache_policy=NO_CACHE)
def find_launch_issues(tracker: IssueTracker, plan: Plan) -> dict[str, IssueState]:
    """Every issue GitLab has for this launch, by key (oldest wins if a key appears twice)."""
    found: dict[str, IssueState] = {}
    for state in tracker.find_issues(
        plan.request.project, plan.request.launch_label, plan.launch_marker
    ):
        if state.key is None or not state.key.startswith(f"{plan.request.slug}/"):
            continue  # another launch's issue that carries this launch's label
        if state.key in found:
            _logger().warning(
                "Issues %s and %s both carry key %s; keeping the older one",
                found[state.key].web_url,
                state.web_url,
                state.key,
            )
            continue
        found[state.key] = state
    return found


@task(name="ensure-labels", cache_policy=NO_CACHE)
def ensure_labels(tracker: IssueTracker, plan: Plan, dry_run: bool = False) -> ActionResult:
    """Create the labels the launch uses that the project lacks."""
    labels = plan.labels()
    if dry_run:
        return ActionResult(
            f"{plan.request.slug}/labels",
            "labels",
            "Labels",
            Outcome.unchanged,
            detail=f"{len(labels)} labels (not checked in a dry run)",
        )
    created = tracker.ensure_labels(plan.request.project, labels)
    return ActionResult(
        key=f"{plan.request.slug}/labels",
        kind="labels",
        title="Labels",
        outcome=Outcome.created if created else Outcome.unchanged,
        detail=f"{len(created)} of {len(labels)} created"
        if created
        else f"all {len(labels)} present",
    )


@task(name="ensure-issue", task_run_name="ensure {spec.key}", cache_policy=NO_CACHE)
def ensure_issue(
    tracker: IssueTracker,
    project: str,
    spec: IssueSpec,
    existing: IssueState | None,
    assignee_id: int | None,
    refs: dict[str, int],
    dry_run: bool = False,
) -> ActionResult:
    """Find the issue by key; create it if missing, update the fields that drifted, or leave it."""
    managed = fill_refs(spec.description, refs)
    result = ActionResult(
        key=spec.key, kind=spec.role.value, title=spec.title, outcome=Outcome.unchanged
    )
    if existing is None:
        result.outcome = Outcome.created
        if not dry_run:
            state = tracker.create_issue(
                project, new_issue(spec, managed=managed, assignee_id=assignee_id), spec.labels
            )
            result.url, result.iid = state.web_url, state.iid
        return result
    result.url, result.iid = existing.web_url, existing.iid
    write = diff_issue(spec, existing, managed=managed, assignee_id=assignee_id)
    if write.is_empty():
        return result
    result.outcome = Outcome.updated
    result.detail = "changed: " + ", ".join(write.changed_fields())
    if not dry_run:
        tracker.update_issue(project, existing.iid, write)
    return result


@task(name="drop-issue", task_run_name="drop {existing.key}", cache_policy=NO_CACHE)
def drop_issue(
    tracker: IssueTracker, project: str, existing: IssueState, reason: str, dry_run: bool = False
) -> ActionResult:
    """Close an issue whose activity no longer applies, saying why; never delete it."""
    result = ActionResult(
        key=existing.key or "",
        kind="dropped",
        title=existing.title,
        outcome=Outcome.unchanged,
        url=existing.web_url,
        iid=existing.iid,
    )
    write = drop_write(existing)
    if write is None:
        result.detail = "already closed"
        return result
    result.outcome = Outcome.closed
    result.detail = reason
    if not dry_run:
        # Note first, so a closed issue always says why; GitLab is asked first, because an
        # earlier attempt or run may have posted it and then failed to close the issue.
        note = f"tminus: {reason}. Closed; it reopens if the activity comes back."
        if tracker.find_note(project, existing.iid, note) is None:
            tracker.add_note(project, existing.iid, note)
        tracker.update_issue(project, existing.iid, write)
    return result


@task(name="ensure-links", cache_policy=NO_CACHE)
def ensure_links(
    tracker: IssueTracker, project: str, tracking_iid: int, iids: list[int], dry_run: bool = False
) -> ActionResult:
    """Link every launch issue to the tracking issue (GitLab's related issues)."""
    linked = tracker.linked_iids(project, tracking_iid)
    missing = [iid for iid in iids if iid not in linked]
    if not dry_run:
        for iid in missing:
            tracker.link_issues(project, tracking_iid, iid)
    return ActionResult(
        key=f"tracking#{tracking_iid}/links",
        kind="links",
        title="Links to the tracking issue",
        outcome=Outcome.created if missing else Outcome.unchanged,
        detail=f"{len(missing)} added" if missing else f"all {len(iids)} linked",
    )


CANCEL_NOTE_MARKER = "tminus:cancelled"


@task(name="cancel-launch", cache_policy=NO_CACHE)
def cancel_launch(tracker: IssueTracker, request: LaunchRequest, reason: str) -> ActionResult:
    """Mark a launch cancelled on its tracking issue (label and one comment); delete nothing."""
    key = f"{request.slug}/tracking"
    found = next(
        (
            s
            for s in tracker.find_issues(
                request.project, request.launch_label, key_marker_prefix(request.slug)
            )
            if s.key == key
        ),
        None,
    )
    result = ActionResult(
        key=key,
        kind="tracking",
        title=f"Cancel launch {request.slug}",
        outcome=Outcome.skipped,
        detail="no tracking issue: nothing to cancel",
    )
    if found is None:
        return result
    result.url, result.iid = found.web_url, found.iid
    changed = False
    if tracker.find_note(request.project, found.iid, CANCEL_NOTE_MARKER) is None:
        tracker.add_note(
            request.project,
            found.iid,
            f"<!-- {CANCEL_NOTE_MARKER} -->\ntminus: launch "
            f"cancelled: {reason}. Nothing was deleted; re-run the launch to resume it.",
        )
        changed = True
    if CANCELLED_LABEL not in found.labels:
        tracker.update_issue(request.project, found.iid, IssueWrite(add_labels=(CANCELLED_LABEL,)))
        changed = True
    result.outcome = Outcome.updated if changed else Outcome.unchanged
    result.detail = "marked cancelled" if changed else "already cancelled"
    return result
