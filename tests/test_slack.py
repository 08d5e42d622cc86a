"""The sales notification: the message (pure), the record of what was sent, and the webhook
client over real HTTP against the Slack stand-in (which enforces Slack's Block Kit limits)."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tminus.domain.request import LaunchRequest, Tier
from tminus.domain.sales import (
    ARRIVED_BOX,
    RESEND_BOX,
    decide,
    intent_note,
    needs_message,
    parse_record,
    read_note,
    render_note,
    render_record,
    reply,
    sent_note,
    sent_record,
)
from tminus.errors import MaybeSentError, PermanentError, SettingsError, TransientError
from tminus.integrations.retry import RetryPolicy
from tminus.integrations.slack import SlackNotifier, as_markdown
from tminus.integrations.slack_blocks import sales_message
from tminus_sandbox.app import ThreadedServer
from tminus_sandbox.control import Control, ControlMiddleware, control_routes
from tminus_sandbox.slack import SlackStore, slack_routes

TRACKING = "http://127.0.0.1:4281/marketing/launches/-/issues/1"
FEATURES = "http://127.0.0.1:4281/features"
SECRET = "s3cr3tT0k3n"


class Slack:
    def __init__(self, url: str, store: SlackStore) -> None:
        self.url = url
        self.store = store
        self.http = httpx.Client(base_url=url, timeout=10)

    def hook(self, name: str = f"T0001/B0001/{SECRET}") -> str:
        return f"{self.url}/slack/webhook/{name}"

    def faults(self, **faults: Any) -> None:
        self.http.put("/_sandbox/faults", json=faults).raise_for_status()

    def log(self) -> list[dict[str, Any]]:
        """The webhook calls the stand-in received (reads of its messages left out)."""
        rows: list[dict[str, Any]] = self.http.get("/_sandbox/requests").json()
        return [r for r in rows if r["path"].startswith("/slack/webhook/")]

    def messages(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.http.get("/slack/messages").json()
        return rows


@pytest.fixture(scope="module")
def slack_server() -> Iterator[Slack]:
    store = SlackStore(rate_limit=None)
    control = Control()
    app = Starlette(routes=[*slack_routes(store), *control_routes(control, store.reset)])
    with ThreadedServer(ControlMiddleware(app, control)) as server:
        slack = Slack(server.url, store)
        yield slack
        slack.http.close()


@pytest.fixture
def slack(slack_server: Slack) -> Slack:
    slack_server.http.post("/_sandbox/reset").raise_for_status()
    slack_server.store.rate_limit = None
    return slack_server


def fast(url: str, attempts: int = 5, sleep: Any = None) -> SlackNotifier:
    policy = RetryPolicy(attempts=attempts, backoff=0.01, jitter=0)
    if sleep is not None:
        policy = dataclasses.replace(policy, sleep=sleep)
    return SlackNotifier(url, timeout=5, retry=policy)


# --- the message ----------------------------------------------------------------------------


def texts(payload: dict[str, Any]) -> list[str]:
    """Every text of the message, block by block (fields included)."""
    out = []
    for block in payload["blocks"]:
        if "text" in block:
            out.append(block["text"]["text"])
        out.extend(f["text"] for f in block.get("fields", []))
        out.extend(e.get("text", "") for e in block.get("elements", []))
    return out


def assert_within_limits(payload: dict[str, Any]) -> None:
    blocks = payload["blocks"]
    assert payload["text"] and len(blocks) <= 50
    for block in blocks:
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            assert 0 < len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert 0 < len(block["text"]["text"]) <= 3000
            assert len(block.get("fields", [])) <= 10
            assert all(0 < len(f["text"]) <= 2000 for f in block.get("fields", []))


def test_l1_message(l1: LaunchRequest) -> None:
    payload = sales_message(l1, tracking_url=TRACKING, features_url=FEATURES)
    assert_within_limits(payload)
    assert payload["text"] == "Launch: Code Review Agent, tier L1 (Large), on 2027-03-16"
    assert payload["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Launch: Code Review Agent"},
    }
    facts = payload["blocks"][1]
    assert facts["text"]["text"].startswith("*Code Review Agent* launches on *2027-03-16*")
    assert [f["text"] for f in facts["fields"]] == [
        "*Tier*\nL1 (Large)",
        "*Launch date*\n2027-03-16",
        "*Release*\nv18.0.0",
        "*PMM (GitLab)*\npriya.pmm",
        "*Training*\nSales all-hands, 2027-03-09 16:00 UTC (recording in the enablement portal)",
    ]
    all_text = "\n".join(texts(payload))
    assert "*In 25 words*\nCode Review Agent reviews every merge request" in all_text
    assert "*In 50 words*\nCode Review Agent is an AI reviewer" in all_text
    agent = next(t for t in texts(payload) if t.startswith("*Code Review Agent*\n"))
    assert agent.splitlines() == [
        "*Code Review Agent*",
        "An AI agent that reviews every merge request and proposes fixes inline.",
        "*Who it is for:* Engineering teams with more merge requests than reviewers.",
        "*Pain it solves:* Merge requests wait days for a first review.",
        "*Key selling points*",
        "• First review within minutes, on every merge request",
        "• Fixes proposed as suggestions the author applies in one click",
        "*Limitations sales must know*",
        "• Reviews code only; does not review pipelines or infrastructure files",
        "*Docs:* <http://127.0.0.1:4281/docs/code-review-agent|"
        "127.0.0.1:4281/docs/code-review-agent>",
    ]
    policies = next(t for t in texts(payload) if t.startswith("*Review policies*\n"))
    assert "*Limitations" not in policies  # none given: no empty heading
    links = next(t for t in texts(payload) if t.startswith("*Links*"))
    assert links.splitlines() == [
        "*Links*",
        f"• /features page: <{FEATURES}|127.0.0.1:4281/features>",
        f"• Launch issue: <{TRACKING}|127.0.0.1:4281/marketing/launches/-/issues/1>",
        "• Blog post: <http://127.0.0.1:4281/blog/code-review-agent|"
        "127.0.0.1:4281/blog/code-review-agent>",
    ]


def test_missing_optional_fields_are_left_out(l3: LaunchRequest) -> None:
    payload = sales_message(l3, tracking_url=None, features_url=None)
    assert_within_limits(payload)
    dump = json.dumps(payload)
    for absent in (
        "None",
        "null",
        "Who it is for",
        "Pain",
        "selling points",
        "Limitations",
        "In 25 words",
        "Training",
        "Release",
        "Links",
        "Blog post",
    ):
        assert absent not in dump, absent
    assert "*Dark mode*\nA dark theme for the whole web UI" in dump.replace("\\n", "\n")


def test_text_is_escaped_for_mrkdwn(l1: LaunchRequest) -> None:
    data = l1.model_dump(mode="json")
    data["title"] = "Agents <beta> & more"
    data["features"][0]["selling_points"] = ["Pings nobody: <!channel>"]
    payload = sales_message(
        LaunchRequest.model_validate(data), tracking_url=None, features_url=None
    )
    all_text = "\n".join(texts(payload))
    assert "*Agents &lt;beta&gt; &amp; more* launches" in all_text
    assert "Pings nobody: &lt;!channel&gt;" in all_text
    assert "<!channel>" not in all_text
    assert payload["text"].startswith("Launch: Agents &lt;beta&gt; &amp; more")
    assert payload["blocks"][0]["text"]["text"] == "Launch: Agents <beta> & more"  # plain_text


def big_launch() -> LaunchRequest:
    """The largest launch a launch file may describe: every list and text at its limit."""
    long = "x" * 270
    features = [
        {
            "name": f"Feature {i:02d}",
            "summary": long,
            "docs_urls": [f"https://docs.example.com/{i}/{'p' * 200}"],
            "features_page_title": f"F{i}",
            "audience": long,
            "pain": long,
            "selling_points": [long] * 8,
            "limitations": [long] * 8,
        }
        for i in range(20)
    ]
    return LaunchRequest.model_validate(
        {
            "slug": "big",
            "title": "T" * 120,
            "tier": "L1",
            "launch_date": "2027-03-16",
            "owner": "priya",
            "project": "g/p",
            "features": features,
            "training": long,
        }
    )


def test_a_huge_launch_stays_within_slack_limits(slack: Slack) -> None:
    request = big_launch()
    payload = sales_message(request, tracking_url=TRACKING, features_url=FEATURES)
    assert_within_limits(payload)
    shown = [t for t in texts(payload) if t.startswith("*Feature ")]
    assert len(shown) == 20  # every feature has its section
    assert all(t.endswith("…") for t in shown)  # each cut to Slack's 3,000 characters
    old = sent_record(request).model_copy(
        update={"launch_date": request.launch_date.replace(day=1)}
    )
    correction = sales_message(request, tracking_url=None, features_url=None, correction_of=old)
    assert_within_limits(correction)
    assert correction["blocks"][0]["text"]["text"].endswith(
        "now launches 2027-03-16 (was 2027-03-01)"
    )
    for message in (payload, correction):  # the stand-in enforces Slack's limits too
        fast(slack.hook()).post(message)
    assert len(slack.messages()) == 2

    # Past what a launch file allows (a playbook or a future limit): still 50 blocks at most.
    more = [
        f.model_copy(update={"name": f"Feature {i + 20:02d}"})
        for i, f in enumerate(request.features * 2)
    ]
    wider = request.model_copy(update={"features": [*request.features, *more]})
    payload = sales_message(wider, tracking_url=TRACKING, features_url=FEATURES)
    assert_within_limits(payload)
    assert len(payload["blocks"]) == 50
    assert any(t.startswith("*And 17 more features:* Feature 43, ") for t in texts(payload))


# --- corrections and the record -------------------------------------------------------------


def moved(request: LaunchRequest, **changes: Any) -> LaunchRequest:
    return request.model_copy(update=changes)


def test_correction_says_what_changed(l1: LaunchRequest) -> None:
    before = sent_record(l1)
    later = moved(l1, launch_date=l1.launch_date + timedelta(days=7))
    payload = sales_message(later, tracking_url=TRACKING, features_url=None, correction_of=before)
    assert_within_limits(payload)
    header = "Correction: Code Review Agent now launches 2027-03-23 (was 2027-03-16)"
    assert payload["blocks"][0]["text"]["text"] == header
    assert payload["text"] == header
    assert payload["blocks"][1]["text"]["text"].splitlines()[:2] == [
        "*What changed*",
        "• Launch date: ~2027-03-16~ → *2027-03-23*",
    ]
    assert any("*Key selling points*" in t for t in texts(payload))  # the current kit follows

    smaller = moved(l1, tier=Tier.L2)
    payload = sales_message(smaller, tracking_url=None, features_url=None, correction_of=before)
    assert (
        payload["blocks"][0]["text"]["text"]
        == "Correction: Code Review Agent tier changed L1 -> L2"
    )
    assert payload["text"] == "Correction: Code Review Agent tier changed L1 -&gt; L2"  # mrkdwn
    assert "• Tier: ~L1 (Large)~ → *L2 (Medium)*" in payload["blocks"][1]["text"]["text"]

    both = moved(later, tier=Tier.L2)
    payload = sales_message(both, tracking_url=None, features_url=None, correction_of=before)
    assert payload["blocks"][0]["text"]["text"] == (
        "Correction: Code Review Agent now launches 2027-03-23 (was 2027-03-16), "
        "tier changed L1 -> L2"
    )


def test_needs_message(l1: LaunchRequest) -> None:
    sent = sent_record(l1)
    assert needs_message(None, sent) == "announce"
    assert needs_message(sent, sent_record(l1)) is None
    data = l1.model_dump(mode="json")
    data["features"][0]["selling_points"] = ["Reworded"]
    edited = sent_record(LaunchRequest.model_validate(data))
    assert edited.digest != sent.digest  # the kit changed ...
    assert needs_message(sent, edited) is None  # ... but sales is not told again
    later = sent_record(moved(l1, launch_date=l1.launch_date + timedelta(days=1)))
    assert needs_message(sent, later) == "correct"
    assert needs_message(sent, sent_record(moved(l1, tier=Tier.L2))) == "correct"


def test_record_round_trip(l1: LaunchRequest) -> None:
    record = sent_record(l1)
    line = render_record(record)
    assert "\n" not in line and line.startswith("<!-- tminus:sales-notified {")
    assert line.endswith("} -->")
    assert json.loads(line.split(" ", 2)[2].rsplit(" ", 1)[0]) == {
        "slug": "code-review-agent",
        "tier": "L1",
        "launch_date": "2027-03-16",
        "digest": record.digest,
    }
    assert parse_record(line) == record
    assert parse_record(f"Sales notified.\n\n{line}\n\nthanks!") == record
    assert parse_record("no marker here") is None
    assert parse_record('<!-- tminus:sales-notified {"slug": "x"} -->') is None  # damaged


def tick(body: str, box: str) -> str:
    assert f"- [ ] {box}" in body
    return body.replace(f"- [ ] {box}", f"- [x] {box}")


def test_sales_note_records_intent_before_the_post(l1: LaunchRequest) -> None:
    """At most once: a note that still holds the intent means "maybe sent", and only a PMM's
    tick turns it into "sent" or "send it again"."""
    record = sent_record(l1)
    assert decide(read_note(None), record) == "announce"
    intent = render_note(intent_note(read_note(None), record, "a1b2c3d4"), "2027-01-01 10:00 UTC")
    assert "in flight since 2027-01-01 10:00 UTC" in intent
    assert decide(read_note(intent), record) == "unknown"  # never posted again by itself
    assert decide(read_note(intent), sent_record(moved(l1, tier=Tier.L2))) == "unknown"

    arrived = read_note(tick(intent, ARRIVED_BOX))
    assert decide(arrived, record) is None
    settled = arrived.settled()
    assert settled.sent is not None and settled.pending is None
    assert settled.sent.model_copy(update={"attempt": None}) == record
    # Anyone who can comment can answer instead of ticking: the reply names this attempt.
    assert "`tminus sales a1b2c3d4 arrived`" in intent
    assert reply(read_note(intent).pending, "resend") == "tminus sales a1b2c3d4 resend"  # type: ignore[arg-type]
    assert decide(read_note(tick(intent, RESEND_BOX)), record) == "announce"

    sent = render_note(sent_note(read_note(intent), "2027-01-01 10:00 UTC"), "later")
    assert sent.startswith("Sales was told in Slack: tier L1, launch 2027-03-16.")
    assert "in flight" not in sent and parse_record(sent) == record
    assert decide(read_note(sent), record) is None
    later = sent_record(moved(l1, launch_date=l1.launch_date + timedelta(days=16)))
    assert decide(read_note(sent), later) == "correct"
    correction = render_note(intent_note(read_note(sent), later, "e5f6a7b8"), "t")
    assert parse_record(correction) == record  # the last message sales surely got is kept
    done = render_note(sent_note(read_note(correction), "2027-02-01 09:00 UTC"), "t")
    assert read_note(done).history == (
        "- 2027-01-01 10:00 UTC: Sales notified in Slack: tier L1, launch 2027-03-16",
        "- 2027-02-01 09:00 UTC: Sales sent a correction in Slack: tier L1, launch 2027-04-01",
    )


# --- the webhook client ---------------------------------------------------------------------


def test_post_succeeds(slack: Slack, l1: LaunchRequest) -> None:
    payload = sales_message(l1, tracking_url=TRACKING, features_url=FEATURES)
    notifier = fast(slack.hook())
    notifier.post(payload)
    [message] = slack.messages()
    assert message["payload"] == payload
    assert message["token"] == f"T0001/B0001/{SECRET}"
    assert SECRET not in repr(notifier)


@pytest.mark.parametrize(
    ("token", "payload", "status", "code", "hint"),
    [
        (f"archived-{SECRET}", {"text": "hi"}, 410, "channel_is_archived", "unarchive it"),
        (f"revoked-{SECRET}", {"text": "hi"}, 403, "invalid_token", "TMINUS_SLACK_WEBHOOK_URL"),
        (f"prohibited-{SECRET}", {"text": "hi"}, 403, "action_prohibited", "workspace admin"),
        (f"deleted-{SECRET}", {"text": "hi"}, 404, "no_service", "TMINUS_SLACK_WEBHOOK_URL"),
        (SECRET, {"blocks": []}, 400, "no_text", "report this tminus bug"),
        (SECRET, {"text": "x", "blocks": [{"type": "divider"}] * 51}, 400, "invalid_blocks", "bug"),
    ],
)
def test_error_codes_are_permanent_with_a_hint(
    slack: Slack,
    caplog: pytest.LogCaptureFixture,
    token: str,
    payload: dict[str, Any],
    status: int,
    code: str,
    hint: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = slack.hook(f"T0001/B0001/{token}")
    with pytest.raises(PermanentError) as info:
        fast(url).post(payload)
    exc = info.value
    assert (exc.system, exc.status, exc.resource) == ("Slack", status, "webhook")
    assert exc.message.startswith(f"{code}: ") and hint in exc.message
    assert len(slack.log()) == 1  # refused at once, not retried
    # The webhook URL is a secret: not in the error, its repr, its cause or the logs.
    for shown in (str(exc), repr(exc), exc.message, repr(exc.__cause__)):
        assert SECRET not in shown and "B0001" not in shown
    assert "HTTP Request: POST" in caplog.text  # httpx did log the request ...
    assert SECRET not in caplog.text  # ... with the secret redacted


def test_rate_limit_waits_for_retry_after(slack: Slack) -> None:
    slack.store.rate_limit = 1
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        __import__("time").sleep(seconds)

    notifier = fast(slack.hook(), sleep=sleep)
    notifier.post({"text": "first"})
    notifier.post({"text": "second"})  # within the same second: 429, wait 1 s, then ok
    assert waits == [1.0]
    assert [m["text"] for m in slack.messages()] == ["first", "second"]
    assert [r["status"] for r in slack.log()] == [200, 429, 200]


def test_rate_limited_for_good_is_transient(slack: Slack) -> None:
    slack.faults(rate_limit_rate=1.0, retry_after=0, prefix="/slack/webhook/")
    with pytest.raises(TransientError) as info:
        fast(slack.hook(), attempts=3).post({"text": "hi"})
    assert info.value.status == 429 and "after 3 attempts" in str(info.value)
    assert SECRET not in str(info.value)
    assert len(slack.log()) == 3 and slack.messages() == []


def test_a_lost_answer_is_never_posted_again(slack: Slack) -> None:
    """A 5xx can follow a posted message (a proxy in front of Slack): no second post."""
    slack.faults(after_write_error_rate=1.0, prefix="/slack/webhook/")
    with pytest.raises(MaybeSentError) as info:
        fast(slack.hook()).post({"text": "hi"})
    assert info.value.status == 502 and "may have been carried out" in str(info.value)
    assert [r["status"] for r in slack.log()] == [502]
    assert [m["text"] for m in slack.messages()] == ["hi"]  # it was posted: exactly once
    slack.faults(error_rate=1.0, prefix="/slack/webhook/")
    with pytest.raises(MaybeSentError):
        fast(slack.hook()).post({"text": "again"})
    assert len(slack.log()) == 2


def test_unreachable_is_transient_and_secret() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/services/T0/B0/{SECRET}"
        with pytest.raises(TransientError) as info:
            fast(url, attempts=2).post({"text": "hi"})
    assert "cannot reach Slack at 127.0.0.1" in str(info.value)
    # The chain holds only tminus's own errors (httpx's carry the URL, with the secret).
    cause = info.value.__cause__
    assert isinstance(cause, TransientError) and cause.__cause__ is None
    assert SECRET not in str(info.value) and SECRET not in str(cause)


def test_bad_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(SettingsError) as info:
        SlackNotifier(f"hooks.slack.com/services/{SECRET}")
    assert SECRET not in str(info.value)


# --- the stand-in itself --------------------------------------------------------------------


def test_stand_in_validates_like_slack(slack: Slack) -> None:
    post = slack.http.post
    hook = "/slack/webhook/T/B/x"
    answer = post(hook, content=b"{not json", headers={"content-type": "application/json"})
    assert (answer.status_code, answer.text) == (400, "invalid_payload")
    assert post(hook, json=["a"]).text == "invalid_payload"
    assert post(hook, json={"text": ""}).text == "no_text"
    assert post(hook, json={"blocks": "nope"}).text == "invalid_blocks"
    header = {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}
    assert post(hook, json={"text": "t", "blocks": [header]}).text == "invalid_blocks"
    form = post(hook, data={"payload": json.dumps({"text": "from a form"})})
    assert (form.status_code, form.text) == (200, "ok")
    assert form.headers["content-type"].startswith("text/html")
    assert [m["text"] for m in slack.messages()] == ["from a form"]


def test_stand_in_rate_limit_and_page(slack: Slack) -> None:
    slack.store.rate_limit = 1
    hook = "/slack/webhook/T/B/x"
    assert slack.http.post(hook, json={"text": "<script>alert(1)</script> & co"}).text == "ok"
    limited = slack.http.post(hook, json={"text": "again"})
    assert (limited.status_code, limited.text) == (429, "rate_limited")
    assert limited.headers["retry-after"] == "1"
    assert slack.http.post("/slack/webhook/T/B/other", json={"text": "other hook"}).text == "ok"
    page = slack.http.get("/slack/").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert "<script>alert" not in page
    assert "Messages received (2)" in page


def test_stand_in_keeps_messages_in_sqlite(tmp_path: Any) -> None:
    path = tmp_path / "slack.sqlite3"
    SlackStore(path).add("T/B/x", {"text": "kept"})
    assert [m["text"] for m in SlackStore(path).messages()] == ["kept"]
    store = SlackStore(path)
    store.reset()
    assert store.messages() == []


def test_the_message_shown_for_approval_is_the_whole_kit_and_inert(l1: LaunchRequest) -> None:
    """What a PMM approves reads as sales will read it: every part of the kit, and text people
    wrote never turns into a link, an image or HTML in the Prefect UI."""
    feature = l1.features[0].model_copy(
        update={"summary": "See [the docs](https://phish.example) ![](https://track.example/p)"}
    )
    request = l1.model_copy(
        update={"title": "Agent [click](javascript:alert(1)) <b>", "features": [feature]}
    )
    shown = as_markdown(sales_message(request, tracking_url=TRACKING, features_url=FEATURES))
    assert "**Key selling points**" in shown and "**Limitations sales must know**" in shown
    assert "**In 50 words**" in shown and "### Launch: Agent" in shown
    for text in ("[the docs](", "![](", "[click](", "<b>"):
        assert text not in shown
    assert "\\[the docs\\](https://phish.example)" in shown  # shown as typed
    assert f"]({TRACKING})" in shown  # tminus's own links stay links
