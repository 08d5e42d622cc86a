"""The launch flow, run for real on a Prefect test server against the GitLab stand-in."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest

from tminus.domain.plan import KEY_MARKER_PATTERN
from tminus.domain.report import LaunchReport
from tminus.domain.request import LaunchRequest, Tier
from tminus.errors import LaunchIncomplete
from tminus.flows.launch import launch
from tminus.integrations.gitlab import label_color
from tminus.settings import Settings

from .conftest import ROOT, SandboxClient

pytestmark = pytest.mark.usefixtures("prefect_server")

PROJECT = "marketing/launches"


def snapshot(sandbox: SandboxClient) -> dict[str, Any]:
    """Everything a launch leaves in GitLab, keyed so two runs can be compared."""
    project = sandbox.gitlab().projects.get(PROJECT)
    issues = {}
    listing = project.issues.list(get_all=True, state="all")
    keys = {
        i.iid: m.group(1) for i in listing if (m := KEY_MARKER_PATTERN.search(i.description or ""))
    }
    for issue in listing:
        match = KEY_MARKER_PATTERN.search(issue.description or "")
        key = match.group(1) if match else f"unkeyed-{issue.iid}"
        assert key not in issues, f"duplicate issue for {key}"
        issues[key] = {
            "title": issue.title,
            "labels": sorted(issue.labels),
            "due": issue.due_date,
            "state": issue.state,
            "assignees": sorted(a["username"] for a in issue.assignees),
            "links": sorted(
                KEY_MARKER_PATTERN.search(link.description).group(1)  # type: ignore[union-attr]
                for link in issue.links.list(get_all=True)
            ),
            # iids depend on creation order; compare references by key
            "description": re.sub(
                r"#(\d+)",
                lambda m: f"#{keys.get(int(m.group(1)), m.group(1))}",
                KEY_MARKER_PATTERN.sub("", issue.description),
            ),
        }
    return issues


ISSUE_KINDS = {"tracking", "activity", "sister"}


def tally(result: LaunchReport, kinds: set[str] | None = None) -> dict[str, int]:
    """Outcomes of the result rows of these kinds (default: all but page checks)."""
    out: dict[str, int] = {}
    for row in result.rows():
        if (kinds is None and row["kind"] != "page") or (kinds and row["kind"] in kinds):
            out[row["outcome"]] = out.get(row["outcome"], 0) + 1
    return out


def run(request: LaunchRequest, **kw: Any) -> LaunchReport:
    result: LaunchReport = launch(request=request, **kw)
    return result


def test_first_run_creates_everything_second_run_writes_nothing(
    sandbox: SandboxClient, settings: Settings, l1: LaunchRequest
) -> None:
    first = run(l1)
    assert tally(first) == {"created": 26}
    assert tally(first, ISSUE_KINDS | {"labels", "links"}) == {"created": 19}
    assert tally(first, {"blocked-by"}) == {"created": 3}  # public comms wait for 2 gates
    assert tally(first, {"calendar"}) == {"created": 3}
    assert tally(first, {"sales"}) == {"created": 1}
    state = snapshot(sandbox)
    assert len(state) == 17  # with the retrospective
    tracking = state["code-review-agent/tracking"]
    assert len(tracking["links"]) == 16
    assert "- [ ] **Launch blog post** — #" in tracking["description"]
    assert "(issue not created yet)" not in tracking["description"]
    assert state["code-review-agent/activity/docs-update"]["assignees"] == ["dana.docs"]
    assert first.tracking_url.endswith("/-/issues/17")
    social = state["code-review-agent/activity/social-promotion"]
    gates = [
        "code-review-agent/activity/legal-review",
        "code-review-agent/activity/marketing-review",
    ]
    assert set(gates) <= set(social["links"])
    assert social["description"].startswith(
        f"**Blocked by** #{gates[1]}, #{gates[0]}: start once they are closed."
    )

    sandbox.clear_log()
    second = run(l1)
    assert sandbox.writes() == []  # GitLab, Calendar and Slack
    assert tally(second) == {"unchanged": 26}
    assert snapshot(sandbox) == state
    # People the launch assigns are known from their issues: only the others are looked up.
    assigned = {name for issue in state.values() for name in issue["assignees"]}
    named = {l1.owner, *l1.team.values()}
    lookups = [r["query"] for r in sandbox.requests() if r["path"] == "/api/v4/users"]
    assert sorted(lookups) == sorted(f"username={n}" for n in named - assigned) == []


def test_removed_blocking_links_are_made_again_after_one_read(
    sandbox: SandboxClient, settings: Settings, l1: LaunchRequest
) -> None:
    run(l1)
    state = snapshot(sandbox)
    store = sandbox.sandbox.gitlab

    def blocking() -> int:
        with store.tx() as db:
            return int(
                db.execute("SELECT COUNT(*) FROM links WHERE link_type = 'blocks'").fetchone()[0]
            )

    links = blocking()
    assert links == 6  # three issues wait for two gates each
    with store.tx() as db:  # someone removes them in GitLab's UI
        db.execute("DELETE FROM links WHERE link_type = 'blocks'")
    sandbox.clear_log()
    result = run(l1)
    requests = sandbox.requests()
    writes = [(w["method"], w["path"].endswith("/links")) for w in sandbox.writes()]
    assert blocking() == links
    assert snapshot(sandbox) == state
    assert "failed" not in tally(result)
    # The waiting issues' blockers in one GraphQL query; the tracking issue's links by REST.
    assert len([r for r in requests if r["path"] == "/api/graphql"]) == 1
    link_reads = [r for r in requests if r["method"] == "GET" and r["path"].endswith("/links")]
    assert len(link_reads) == 1
    # The links, and nothing else, are written.
    assert writes == [("POST", True)] * links


def test_an_unreadable_blocker_list_fails_only_the_blocked_by_rows(
    sandbox: SandboxClient, settings: Settings, l1: LaunchRequest
) -> None:
    run(l1)
    sandbox.faults(error_rate=1.0, error_status=403, prefix="/api/graphql")
    with pytest.raises(LaunchIncomplete) as err:
        run(l1)
    sandbox.faults()
    failed = err.value.report.failed
    assert sorted(r.kind for r in failed) == ["blocked-by"] * 3, str(err.value)
    assert all("GitLab blocking links of marketing/launches (403)" in r.detail for r in failed)
    assert "unchanged" in tally(err.value.report)  # the rest was checked


def test_labels_get_tminus_colors_not_the_ones_issue_creates_give(
    sandbox: SandboxClient, settings: Settings, l1: LaunchRequest
) -> None:
    # GitLab creates the unknown labels an issue names, with its default color: the labels
    # must exist before the first issue is created, or they never get tminus's colors.
    sandbox.faults(latency_ms=20)  # issue creates and label creates overlap in time
    run(l1)
    sandbox.faults()
    labels = sandbox.gitlab().projects.get(PROJECT).labels.list(get_all=True)
    colors = {label.name: label.color for label in labels}
    assert colors["launch-tier::L1"] == "#dc143c"
    assert colors["launch::code-review-agent"] == label_color("launch::code-review-agent")
    assert all(color == label_color(name) for name, color in colors.items())


def test_thirty_percent_faults_leave_the_same_issues(
    sandbox: SandboxClient, settings: Settings, l1: LaunchRequest
) -> None:
    run(l1)
    clean = snapshot(sandbox)
    sandbox.reset()
    sandbox.faults(
        error_rate=0.15,
        rate_limit_rate=0.1,
        after_write_error_rate=0.05,
        retry_after=0,
        seed=7,
        prefix="/api/v4",  # GitLab's share; Slack and Calendar faults have their own tests
    )
    result = run(l1)
    requests = [r for r in sandbox.requests() if r["path"].startswith("/api/v4")]
    sandbox.faults()
    faulted = [r for r in requests if r["fault"]]
    assert len(faulted) / len(requests) >= 0.2, "the fault injection did not bite"
    assert {r["fault"] for r in faulted} == {"429", "5xx", "after-write"}
    assert "failed" not in tally(result)
    assert snapshot(sandbox) == clean


def test_people_edits_survive_a_rerun(
    sandbox: SandboxClient, settings: Settings, l2: LaunchRequest
) -> None:
    run(l2)
    project = sandbox.gitlab().projects.get(PROJECT)
    tracking = next(i for i in project.issues.list(get_all=True) if "tracking" in str(i.labels))
    ticked = tracking.description.replace(
        "- [ ] **Launch blog post**", "- [x] **Launch blog post**"
    )
    project.issues.update(tracking.iid, {"description": ticked + "\n\nPMM notes: on track"})
    moved = l2.model_copy(update={"launch_date": l2.launch_date + timedelta(days=7)})
    result = run(moved)
    assert result.counts["updated"] >= 1
    after = project.issues.get(tracking.iid).description
    assert "- [x] **Launch blog post**" in after
    assert after.endswith("PMM notes: on track")


def test_moved_date_updates_due_dates_without_creating(
    sandbox: SandboxClient, settings: Settings, l2: LaunchRequest
) -> None:
    run(l2)
    before = snapshot(sandbox)
    sandbox.clear_log()
    moved = l2.model_copy(update={"launch_date": l2.launch_date + timedelta(days=7)})
    result = run(moved)
    assert "created" not in tally(result, ISSUE_KINDS)
    assert not [w for w in sandbox.writes("/api/v4") if w["path"].endswith("/issues")]
    after = snapshot(sandbox)
    assert before.keys() == after.keys()
    for key in before:
        old, new = before[key]["due"], after[key]["due"]
        assert str(moved.launch_date - l2.launch_date + _d(old)) == new


def _d(text: str) -> Any:
    from datetime import date

    return date.fromisoformat(text)


def test_tier_drop_closes_what_no_longer_applies_and_back_reopens(
    sandbox: SandboxClient, settings: Settings, l1: LaunchRequest
) -> None:
    run(l1)
    l3 = l1.model_copy(update={"tier": Tier.L3})
    result = run(l3)
    closed = [r for r in result.rows() if r["outcome"] == "closed" and r["kind"] == "dropped"]
    cancelled = [r for r in result.rows() if r["outcome"] == "closed" and r["kind"] == "calendar"]
    assert len(cancelled) == 2  # sales training and the livestream are L1-only calendar entries
    state = snapshot(sandbox)
    l3_only = {k for k, v in state.items() if v["state"] == "opened"}
    assert len(closed) == len(state) - len(l3_only) == 9
    assert all("launch-tier::L3" in state[k]["labels"] for k in l3_only)
    livestream = state["code-review-agent/activity/livestream"]
    assert livestream["state"] == "closed" and "launch-status::dropped" in livestream["labels"]
    project = sandbox.gitlab().projects.get(PROJECT)
    iid = next(
        i.iid
        for i in project.issues.list(get_all=True, search="livestream", state="all")
        if i.title.startswith("Livestream")
    )
    notes = project.issues.get(iid).notes.list(get_all=True)
    assert len(notes) == 1 and "not part of the L3 launch" in notes[0].body

    sandbox.clear_log()
    run(l3)  # dropping is done once
    assert sandbox.writes() == []

    # A dry run says what bringing L1 back would do: reopen the dropped issues; their blocking
    # links are still there (GitLab's GraphQL hides closed blockers: they are read by REST).
    preview = run(l1, dry_run=True)
    assert sandbox.writes() == []
    assert tally(preview, {"blocked-by"}) == {"unchanged": 3}
    run(l1)
    state = snapshot(sandbox)
    assert all(v["state"] == "opened" for v in state.values())
    assert all("launch-status::dropped" not in v["labels"] for v in state.values())


def test_closed_issue_stays_closed(
    sandbox: SandboxClient, settings: Settings, l3: LaunchRequest
) -> None:
    run(l3)
    project = sandbox.gitlab().projects.get(PROJECT)
    project.issues.update(1, {"state_event": "close"})
    sandbox.clear_log()
    run(l3)
    assert sandbox.writes() == []


def test_deleted_issue_is_recreated(
    sandbox: SandboxClient, settings: Settings, l3: LaunchRequest
) -> None:
    """Idempotency is checked against GitLab, not a cache: a lost issue comes back."""
    run(l3)
    project = sandbox.gitlab().projects.get(PROJECT)
    # The docs issue: an activity nothing waits for (issues are created concurrently, so
    # which one is #1 varies from run to run).
    [docs] = project.issues.list(labels=["launch-issue::activity", "launch-activity::docs"])
    project.issues.delete(docs.iid)
    result = run(l3)
    by_outcome = {
        (r["outcome"], r["kind"])
        for r in result.rows()
        if r["outcome"] != "unchanged" and r["kind"] != "page"
    }
    # the issue comes back, the tracking issue's reference to it changes, it is linked again
    assert by_outcome == {("created", "activity"), ("updated", "tracking"), ("created", "links")}
    state = snapshot(sandbox)
    assert len(state) == 7 and len(state["dark-mode-beta/tracking"]["links"]) == 6


def test_dry_run_writes_nothing(
    sandbox: SandboxClient, settings: Settings, l1: LaunchRequest
) -> None:
    result = run(l1, dry_run=True)
    assert sandbox.writes() == []
    assert tally(result, ISSUE_KINDS) == {"created": 17}  # every issue would be created
    run(l1)
    moved = l1.model_copy(update={"launch_date": l1.launch_date + timedelta(days=1)})
    sandbox.clear_log()
    result = run(moved, dry_run=True)
    assert sandbox.writes() == []
    assert tally(result, ISSUE_KINDS) == {"updated": 17}


def test_unknown_user_fails_before_any_write(
    sandbox: SandboxClient, settings: Settings, l2: LaunchRequest
) -> None:
    store = sandbox.sandbox.gitlab
    store.project(PROJECT)  # the project and the owner exist; team.docs does not
    store.user("priya.pmm", create=True)
    store.auto_create = False
    try:
        with pytest.raises(Exception, match=r"team.docs: GitLab has no user 'dana.docs'"):
            run(l2)
    finally:
        store.auto_create = True
    assert sandbox.writes() == []


def test_permanent_failure_of_one_issue_fails_the_run_but_not_the_rest(
    sandbox: SandboxClient, settings: Settings, l3: LaunchRequest
) -> None:
    run(l3)
    sandbox.clear_log()
    # GitLab now refuses every new issue (422); updates still work.
    sandbox.faults(
        error_rate=1.0,
        error_status=422,
        methods=["POST"],
        prefix="/api/v4/projects/marketing%2Flaunches/issues",
    )
    changed = l3.model_copy(
        update={
            "optional_activities": ["customer-comms"],
            "launch_date": l3.launch_date + timedelta(days=2),
        }
    )
    with pytest.raises(LaunchIncomplete) as err:
        run(changed)
    summary = err.value.report
    failed = [r for r in summary.rows() if r["outcome"] == "failed" and r["kind"] != "page"]
    assert len(failed) == 1
    assert failed[0]["key"] == "dark-mode-beta/activity/customer-comms"
    assert "(422)" in failed[0]["detail"]
    assert tally(summary, ISSUE_KINDS)["updated"] == 7  # the others moved with the date
    posts = [r for r in sandbox.requests() if r["method"] == "POST" and r["fault"]]
    assert len(posts) == 1  # permanent: not retried
    tracking = snapshot(sandbox)["dark-mode-beta/tracking"]["description"]
    assert "**Customer comms and announcement email** — (issue not created yet)" in tracking


@pytest.mark.e2e
def test_deployment_run_with_json_parameters(
    sandbox: SandboxClient,
    settings_env: dict[str, str],
    l3: LaunchRequest,
    prefect_server: str,
) -> None:
    """Run as the UI, a trigger or a schedule does: a deployment, JSON parameters, a new
    process that loads the flow from its entrypoint."""
    from prefect.deployments import run_deployment

    deployment_id = launch.to_deployment(name="test-launch").apply()
    params = {"request": json.loads(l3.model_dump_json())}
    flow_run = run_deployment(name="launch/test-launch", parameters=params, timeout=0)
    assert flow_run.deployment_id == deployment_id
    env = {**os.environ, **settings_env, "PREFECT_API_URL": prefect_server}
    proc = subprocess.run(
        [sys.executable, "-m", "prefect.engine", str(flow_run.id)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        final = client.read_flow_run(flow_run.id)
    assert final.state is not None and final.state.is_completed(), proc.stderr[-3000:]
    assert len(snapshot(sandbox)) == 7


def test_two_runs_of_one_launch_at_once_create_each_issue_once(
    sandbox: SandboxClient, settings: Settings, l2: LaunchRequest
) -> None:
    """A release create and update seconds apart, or Run clicked twice: the launch lock."""
    import contextvars
    import threading

    sandbox.faults(latency_ms=60, prefix="/api/v4")
    results: list[Any] = []
    # Each thread runs in a copy of this context: the settings the fixture gave.
    threads = [
        threading.Thread(
            target=contextvars.copy_context().run, args=(lambda: results.append(run(l2)),)
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    sandbox.faults()
    assert len(results) == 3
    state = snapshot(sandbox)  # asserts one issue per key
    assert len(state) == 10
    messages = sandbox.http.get("/slack/messages").json()
    assert len(messages) == 1


def test_a_lost_answer_on_the_sales_record_leaves_one_note(
    sandbox: SandboxClient, settings: Settings, l2: LaunchRequest
) -> None:
    # The tracking issue is created last: #9 of L2's nine issues. Every note posted on it is
    # written, then answered 502 (a lost answer).
    sandbox.faults(
        after_write_error_rate=1.0,
        methods=["POST"],
        prefix="/api/v4/projects/marketing%2Flaunches/issues/10/notes",  # tracking
    )
    result = run(l2)
    sandbox.faults()
    assert tally(result, {"sales"}) == {"created": 1}
    tracking = (
        sandbox.gitlab()
        .projects.get(PROJECT)
        .issues.list(labels=["launch-issue::tracking"], get_all=True)[0]
    )
    records = [n for n in tracking.notes.list(get_all=True) if "tminus:sales-notified" in n.body]
    assert len(records) == 1
    assert len(sandbox.http.get("/slack/messages").json()) == 1


def test_another_launchs_label_on_an_issue_does_not_make_it_ours(
    sandbox: SandboxClient, settings: Settings, l2: LaunchRequest, l3: LaunchRequest
) -> None:
    run(l2)
    run(l3)
    project = sandbox.gitlab().projects.get(PROJECT)
    shared = next(
        i
        for i in project.issues.list(get_all=True, labels=["launch::merge-trains-ga"])
        if i.title.startswith("Launch blog post")
    )
    project.issues.update(shared.iid, {"add_labels": "launch::dark-mode-beta"})
    result = run(l3)
    assert not [r for r in result.rows() if r["kind"] == "dropped"]
    assert project.issues.get(shared.iid).state == "opened"


def run_incomplete(request: LaunchRequest) -> LaunchReport:
    with pytest.raises(LaunchIncomplete) as info:
        run(request)
    return info.value.report


def sales_row(result: LaunchReport) -> dict[str, Any]:
    return next(r for r in result.rows() if r["kind"] == "sales")


def sales_note_body(sandbox: SandboxClient) -> tuple[Any, str]:
    project = sandbox.gitlab().projects.get(PROJECT)
    tracking = project.issues.list(labels=["launch-issue::tracking"], get_all=True)[0]
    notes = [n for n in tracking.notes.list(get_all=True) if "<!-- tminus:sales-" in n.body]
    assert len(notes) == 1
    return notes[0], notes[0].body


def test_a_lost_slack_answer_is_never_posted_twice(
    sandbox: SandboxClient, settings: Settings, l2: LaunchRequest
) -> None:
    """Slack (or a proxy) answers 502 after posting: the run reports "maybe sent", re-runs post
    nothing, and a PMM's tick on the sales note settles it."""
    sandbox.faults(after_write_error_rate=1.0, prefix="/slack/webhook/")
    first = run_incomplete(l2)
    assert sales_row(first)["outcome"] == "failed"
    assert "may or may not have reached the channel" in sales_row(first)["detail"]
    assert len(sandbox.http.get("/slack/messages").json()) == 1
    sandbox.faults()
    again = run_incomplete(l2)  # still unknown: nothing posted
    assert sales_row(again)["outcome"] == "failed"
    assert len(sandbox.http.get("/slack/messages").json()) == 1

    note, body = sales_note_body(sandbox)
    note.body = body.replace("- [ ] It arrived", "- [x] It arrived")
    note.save()
    settled = run(l2)
    assert sales_row(settled)["outcome"] == "unchanged"
    assert len(sandbox.http.get("/slack/messages").json()) == 1
    _, body = sales_note_body(sandbox)
    assert "in flight" not in body and "tminus:sales-notified" in body


def test_resend_when_a_pmm_says_it_did_not_arrive(
    sandbox: SandboxClient, settings: Settings, l2: LaunchRequest
) -> None:
    sandbox.faults(error_rate=1.0, prefix="/slack/webhook/")  # 502 before posting: not there
    run_incomplete(l2)
    sandbox.faults()
    assert sandbox.http.get("/slack/messages").json() == []
    note, body = sales_note_body(sandbox)
    note.body = body.replace("- [ ] It did not arrive", "- [x] It did not arrive")
    note.save()
    assert sales_row(run(l2))["outcome"] == "created"
    assert len(sandbox.http.get("/slack/messages").json()) == 1
    assert sales_row(run(l2))["outcome"] == "unchanged"


def test_a_failed_record_after_the_post_never_posts_again(
    sandbox: SandboxClient, settings: Settings, l2: LaunchRequest
) -> None:
    """As if the run died between the post and the record: the intent written before the post
    stops the next run from announcing a second time."""
    sandbox.faults(
        error_rate=1.0,
        methods=["PUT"],
        prefix="/api/v4/projects/marketing%2Flaunches/issues/10/notes",  # tracking
    )
    first = sales_row(run_incomplete(l2))["detail"]
    assert first.startswith("announcement sent, but recording it on the tracking issue failed")
    sandbox.faults()
    assert len(sandbox.http.get("/slack/messages").json()) == 1
    assert "may or may not" in sales_row(run_incomplete(l2))["detail"]
    assert len(sandbox.http.get("/slack/messages").json()) == 1


def test_slack_refusing_the_message_forgets_the_intent(
    sandbox: SandboxClient, settings: Settings, l2: LaunchRequest
) -> None:
    sandbox.faults(error_rate=1.0, error_status=404, prefix="/slack/webhook/")
    assert "not sent" in sales_row(run_incomplete(l2))["detail"]
    sandbox.faults()
    assert sales_row(run(l2))["outcome"] == "created"  # nothing pending: sent now
    assert len(sandbox.http.get("/slack/messages").json()) == 1


def test_a_reply_settles_a_maybe_sent_message(
    sandbox: SandboxClient, settings: Settings, l2: LaunchRequest
) -> None:
    """A PMM who may not tick boxes in the bot's note (GitLab lets Maintainers do that)
    answers with the comment the note names; an old reply never answers a later attempt."""
    sandbox.faults(after_write_error_rate=1.0, prefix="/slack/webhook/")
    run_incomplete(l2)
    sandbox.faults()
    _, body = sales_note_body(sandbox)
    command = re.search(r"`(tminus sales \w+ arrived)`", body)
    assert command is not None
    project = sandbox.gitlab().projects.get(PROJECT)
    tracking = project.issues.list(labels=["launch-issue::tracking"], get_all=True)[0]
    tracking.notes.create({"body": f"Checked #sales: it is there. {command.group(1)}"})
    assert sales_row(run(l2))["outcome"] == "unchanged"
    assert len(sandbox.http.get("/slack/messages").json()) == 1
    _, body = sales_note_body(sandbox)
    assert "in flight" not in body
