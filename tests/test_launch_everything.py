"""One launch run does everything its tier asks for: issues, calendar, page checks, sales."""

from __future__ import annotations

import json
import threading
import time
from datetime import date, timedelta
from typing import Any

import pytest

from tminus.domain.report import LaunchReport
from tminus.domain.request import LaunchRequest
from tminus.flows.launch import launch
from tminus.settings import Settings, use_settings

from .conftest import SandboxClient

pytestmark = pytest.mark.usefixtures("prefect_server")

EMBEDDED = "http://127.0.0.1:4281"


def retarget(request: LaunchRequest, url: str) -> LaunchRequest:
    """The example's docs links point at the embedded sandbox; point them at this one."""
    data = request.model_dump(mode="json")
    for feature in data["features"]:
        feature["docs_urls"] = [u.replace(EMBEDDED, url) for u in feature["docs_urls"]]
    if data.get("blog_url"):
        data["blog_url"] = data["blog_url"].replace(EMBEDDED, url)
    return LaunchRequest.model_validate(data)


def events(sandbox: SandboxClient) -> dict[str, dict[str, Any]]:
    out = {}
    for event in sandbox.sandbox.calendar.events("marketing-launches"):
        key = event["extendedProperties"]["private"]["tminus_key"]
        out[key] = event
    return out


def messages(sandbox: SandboxClient) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = sandbox.http.get("/slack/messages").json()
    return rows


def rows(result: LaunchReport, kind: str) -> list[dict[str, Any]]:
    return [r for r in result.rows() if r["kind"] == kind]


def test_launch_fills_calendar_checks_pages_and_tells_sales_once(
    sandbox: SandboxClient, settings: Settings, l1: LaunchRequest
) -> None:
    request = retarget(l1, sandbox.url)
    result = launch(request=request)

    cal = events(sandbox)
    assert set(cal) == {
        "code-review-agent/calendar/launch-day",
        "code-review-agent/calendar/sales-training",
        "code-review-agent/calendar/livestream-event",
    }
    launch_day = cal["code-review-agent/calendar/launch-day"]
    assert launch_day["start"] == {"date": "2027-03-16"}
    assert launch_day["end"] == {"date": "2027-03-17"}  # all-day: exclusive end
    assert cal["code-review-agent/calendar/sales-training"]["start"] == {"date": "2027-03-09"}

    pages = {r["title"]: r for r in rows(result, "page")}
    failing = {t: r["detail"] for t, r in pages.items() if r["outcome"] == "failed"}
    assert set(failing) == {
        "Docs mention Review policies",
        "/features lists AI code review, Review policies",
        "/features compare view lists AI code review, Review policies",
    }
    assert "Review policies" in failing["Docs mention Review policies"]
    assert pages["Docs mention Code Review Agent"]["outcome"] == "unchanged"

    sent = messages(sandbox)
    assert len(sent) == 1
    assert "Code Review Agent" in sent[0]["payload"]["text"]
    assert rows(result, "sales")[0]["outcome"] == "created"

    sandbox.clear_log()
    again = launch(request=request)
    assert sandbox.writes() == []  # GitLab, Calendar and Slack
    assert len(messages(sandbox)) == 1
    assert rows(again, "sales")[0]["outcome"] == "unchanged"


def test_moved_date_moves_everything_and_sends_one_correction(
    sandbox: SandboxClient, settings: Settings, l2: LaunchRequest
) -> None:
    request = retarget(l2, sandbox.url)
    launch(request=request)
    before = events(sandbox)
    moved = request.model_copy(update={"launch_date": request.launch_date + timedelta(days=7)})
    result = launch(request=moved)
    after = events(sandbox)
    assert before.keys() == after.keys()
    for key, event in after.items():
        old = date.fromisoformat(before[key]["start"]["date"])
        assert event["start"]["date"] == (old + timedelta(days=7)).isoformat()
        assert event["id"] == before[key]["id"]
    sent = messages(sandbox)
    assert len(sent) == 2
    assert "Correction" in sent[1]["payload"]["text"]
    assert rows(result, "sales")[0]["outcome"] == "updated"
    launch(request=moved)
    assert len(messages(sandbox)) == 2  # the correction is sent once


def test_private_docs_address_is_refused_unfetched(
    sandbox: SandboxClient,
    settings: Settings,
    l3: LaunchRequest,
) -> None:
    request = retarget(l3, sandbox.url)
    with use_settings(settings.model_copy(update={"pages_allow_private": False})):
        result = launch(request=request)
    (docs,) = [r for r in rows(result, "page") if r["title"].startswith("Docs")]
    assert docs["outcome"] == "failed" and "private" in docs["detail"]
    assert not [r for r in sandbox.requests() if r["path"].startswith("/docs")]


def test_l1_sales_message_waits_for_approval(
    sandbox: SandboxClient,
    settings: Settings,
    l1: LaunchRequest,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    default_playbook = settings.model_copy(update={"playbook": None})  # L1 needs approval
    request = retarget(l1, sandbox.url)
    done: dict[str, Any] = {}

    def run() -> None:
        with use_settings(default_playbook):
            done.update(result=launch(request=request))

    worker = threading.Thread(target=run)
    worker.start()
    paused = None
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 60
        while paused is None and time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type={"any_": [StateType.PAUSED]})
                )
            )
            paused = runs[0] if runs else None
            time.sleep(0.3)
    assert paused is not None, "the launch never paused for approval"
    assert messages(sandbox) == []  # nothing sent before approval
    assert events(sandbox)  # the rest of the launch was done meanwhile
    # The form and the artifact show the whole message, as sales will read it.
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.input.actions import read_flow_run_input

    keyset = paused.state.state_details.run_input_keyset
    form = read_flow_run_input(keyset["description"], flow_run_id=paused.id)
    with get_client(sync_client=True) as client:
        key = ArtifactFilterKey(any_=[f"sales-message-{request.slug}"])
        artifact = client.read_artifacts(artifact_filter=ArtifactFilter(key=key))[-1]
    for text in (form, artifact.data):
        assert "**Key selling points**" in text and "**Limitations sales must know**" in text
        assert "First review within minutes" in text and "**In 50 words**" in text
        assert "Sales all-hands" in text  # where the training is
    resume_flow_run(paused.id, run_input={"approve": True, "comment": "ship it"})
    worker.join(timeout=60)
    assert rows(done["result"], "sales")[0]["outcome"] == "created"
    assert len(messages(sandbox)) == 1


def paused_launch(
    settings: Settings, request: LaunchRequest, done: dict[str, Any]
) -> tuple[threading.Thread, Any]:
    """Start the launch in a thread; return it and its run once paused for approval."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState
    from prefect.client.schemas.objects import StateType

    def run() -> None:
        with use_settings(settings):
            done.update(result=launch(request=request))

    worker = threading.Thread(target=run)
    worker.start()
    paused = None
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 60
        while paused is None and time.monotonic() < deadline:
            state = FlowRunFilterState(type={"any_": [StateType.PAUSED]})
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=state))
            paused = runs[0] if runs else None
            time.sleep(0.3)
    assert paused is not None, "the launch never paused for approval"
    # Prefect sets the Paused state first, then saves the form's schema, then its description
    # (the preview): a resume in between fails ("Run input schema not found"), as it did once
    # in CI under load.
    from prefect.input.actions import read_flow_run_input

    keyset = paused.state.state_details.run_input_keyset
    while read_flow_run_input(keyset["description"], flow_run_id=paused.id) is None:
        assert time.monotonic() < deadline + 30, "the approval form was never saved"
        time.sleep(0.1)
    return worker, paused


def preview(paused: Any, slug: str) -> tuple[str, str]:
    """The approval form's text and the latest sales-message artifact."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort
    from prefect.input.actions import read_flow_run_input

    keyset = paused.state.state_details.run_input_keyset
    form = read_flow_run_input(keyset["description"], flow_run_id=paused.id)
    with get_client(sync_client=True) as client:
        key = ArtifactFilterKey(any_=[f"sales-message-{slug}"])
        artifact = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=key), sort=ArtifactSort.CREATED_DESC
        )[0]
    return str(form), str(artifact.data)


def test_an_answer_typed_into_a_sister_issue_appears_in_the_next_approval_preview(
    sandbox: SandboxClient, settings: Settings, l1: LaunchRequest
) -> None:
    from prefect.flow_runs import resume_flow_run

    approval = settings.model_copy(update={"playbook": None})  # L1 waits for a PMM
    request = retarget(l1, sandbox.url)
    done: dict[str, Any] = {}
    worker, paused = paused_launch(approval, request, done)
    assert all("Only on GitLab.com" not in text for text in preview(paused, request.slug))
    resume_flow_run(paused.id, run_input={"approve": False, "comment": "wait for answers"})
    worker.join(timeout=60)
    assert messages(sandbox) == []

    # The engineer answers in GitLab's editor: "Review policies" has no limitations in the file.
    project = sandbox.gitlab().projects.get("marketing/launches")
    (issue,) = [
        i
        for i in project.issues.list(get_all=True, labels=["launch-issue::sister"])
        if "Review policies" in i.title
    ]
    question = "#### What are its current limitations?\n\n"
    assert question + "_(answer here)_" in issue.description
    issue.description = issue.description.replace(
        question + "_(answer here)_", question + "- Only on GitLab.com\n- Not for <forks>"
    )
    issue.save()
    typed = issue.description

    worker, paused = paused_launch(approval, request, done)
    for text in preview(paused, request.slug):
        assert "Only on GitLab.com" in text and "Not for &lt;forks&gt;" in text
        assert "<forks>" not in text
    resume_flow_run(paused.id, run_input={"approve": True})
    worker.join(timeout=60)
    assert rows(done["result"], "sales")[0]["outcome"] == "created"
    (sent,) = messages(sandbox)
    assert "Only on GitLab.com" in json.dumps(sent["payload"])
    assert project.issues.get(issue.iid).description == typed  # the re-run kept the answer


def test_the_sales_training_invites_the_sales_channel_with_an_agenda(
    sandbox: SandboxClient, settings: Settings, l2: LaunchRequest
) -> None:
    request = retarget(l2, sandbox.url)
    address = "sales-channel@example.slack.com"
    with use_settings(settings.model_copy(update={"sales_channel_email": address})):
        launch(request=request)
        cal = events(sandbox)
        training = cal[training_key(request)]
        assert training["attendees"] == [{"email": address, "responseStatus": "needsAction"}]
        assert "Agenda\n1. Merge trains: " in training["description"]
        assert all("attendees" not in e for k, e in cal.items() if k != training_key(request))
        assert sandbox.sandbox.calendar.invitations == [(training["id"], address)]
        sandbox.clear_log()
        launch(request=request)
        assert sandbox.writes() == []  # re-run: nothing written, nobody invited again
        assert len(sandbox.sandbox.calendar.invitations) == 1


def training_key(request: LaunchRequest) -> str:
    return f"{request.slug}/calendar/sales-training"


def test_a_service_account_google_refuses_to_let_invite_still_gets_the_training_event(
    sandbox: SandboxClient, settings: Settings, l2: LaunchRequest
) -> None:
    """Google answers 403 forbiddenForServiceAccounts to an undelegated service account that
    invites attendees: the event is created without them, the row says why and what to set,
    and re-runs do not fail the launch."""
    request = retarget(l2, sandbox.url)
    sandbox.sandbox.calendar.refuse_attendees = True
    address = "sales-channel@example.slack.com"
    with use_settings(settings.model_copy(update={"sales_channel_email": address})):
        first = launch(request=request)
        training = events(sandbox)[training_key(request)]
        assert "attendees" not in training and sandbox.sandbox.calendar.invitations == []
        row = next(r for r in rows(first, "calendar") if r["key"] == training_key(request))
        assert row["outcome"] == "created" and "set TMINUS_GCAL_SUBJECT" in row["detail"]
        again = launch(request=request)
        row = next(r for r in rows(again, "calendar") if r["key"] == training_key(request))
        assert row["outcome"] == "skipped" and "set TMINUS_GCAL_SUBJECT" in row["detail"]
        assert not [r for r in again.rows() if r["outcome"] == "failed"]
