"""After launch day, the pure parts: the retrospective's plan and late-work list, success
metrics and their actuals, the audit's status, metrics report and closing decision."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tminus.domain.audit import audit_launch, audit_note
from tminus.domain.issues import (
    DROPPED_LABEL,
    IssueState,
    compose_description,
    diff_issue,
    issue_change,
    split_description,
)
from tminus.domain.plan import LATE_WORK, IssueRole
from tminus.domain.planner import plan_launch
from tminus.domain.playbook import Playbook
from tminus.domain.request import LaunchRequest, SuccessMetric, Tier, parse_launch_request
from tminus.domain.retro import (
    RETROSPECTIVE,
    fill_for,
    late_work,
    late_work_markdown,
    metrics_table,
    read_actuals,
)
from tminus.errors import LaunchFileError

LAUNCH = date(2027, 3, 16)
RETRO_DAY = LAUNCH + timedelta(days=7)
METRICS = [
    SuccessMetric(name="Weekly active users", target="500", source="Product dashboard"),
    SuccessMetric(name="Trials started", target="200", source="Salesforce report"),
]


def issue(iid: int, key: str, due: date | None, closed: date | None = None, **kw) -> IssueState:
    return IssueState(
        iid=iid,
        web_url=f"http://x/-/issues/{iid}",
        title=kw.pop("title", key.rsplit("/", 1)[-1]),
        description=kw.pop("description", ""),
        labels=kw.pop("labels", ()),
        due_date=due,
        assignee_ids=(),
        state="closed" if closed else "opened",
        key=key,
        closed_at=datetime(closed.year, closed.month, closed.day, 15, tzinfo=UTC)
        if closed
        else None,
        **kw,
    )


def with_metrics(request: LaunchRequest) -> LaunchRequest:
    return request.model_copy(update={"success_metrics": METRICS})


# --- the plan -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["l1", "l2", "l3"])
def test_every_tier_plans_a_retrospective_a_week_after_launch_day(
    playbook: Playbook, name: str, request: pytest.FixtureRequest
) -> None:
    launch: LaunchRequest = request.getfixturevalue(name)
    plan = plan_launch(launch, playbook, launch.launch_date - timedelta(days=60))
    (retro,) = [s for s in plan.issues if s.activity_key == RETROSPECTIVE]
    assert retro.key == f"{launch.slug}/activity/{RETROSPECTIVE}"
    assert retro.role is IssueRole.activity and retro.assignee == launch.owner
    assert retro.due_date == launch.launch_date + timedelta(days=7)
    assert not retro.overdue
    assert LATE_WORK in retro.description
    assert f"**Launch retrospective** — [[ref:{retro.key}]], due {retro.due_date}" in (
        plan.tracking.description
    )


def test_the_retrospective_carries_the_metrics_table_only_with_metrics(
    playbook: Playbook, l2: LaunchRequest
) -> None:
    def retro(request: LaunchRequest) -> str:
        plan = plan_launch(request, playbook, LAUNCH)
        return next(s for s in plan.issues if s.activity_key == RETROSPECTIVE).description

    assert "Success metrics" not in retro(l2)
    text = retro(with_metrics(l2))
    assert "| metric | target | source | actual |" in text
    assert "| Weekly active users | 500 | Product dashboard |  |" in text


# --- late work ----------------------------------------------------------------------------


def test_late_work_is_closed_after_due_or_open_past_due_at_the_retrospective() -> None:
    due = LAUNCH - timedelta(days=21)
    issues = [
        issue(1, "x/activity/blog-post", due, closed=due + timedelta(days=3)),  # 3 late
        issue(2, "x/activity/docs-update", due, closed=due),  # on time
        issue(3, "x/sister/feature", due),  # open: 28 days late at T+7
        issue(4, "x/activity/social", LAUNCH + timedelta(days=10)),  # open, not due yet
        issue(5, "x/activity/press", due, labels=(DROPPED_LABEL,)),  # dropped
        issue(6, "x/tracking", LAUNCH),  # not work
        issue(7, f"x/activity/{RETROSPECTIVE}", RETRO_DAY - timedelta(days=1)),  # itself
        issue(8, "x/activity/legal", due, closed=due + timedelta(days=28)),  # 28 late
    ]
    late = late_work(issues, RETRO_DAY, skip=f"x/activity/{RETROSPECTIVE}")
    assert [(x.issue.iid, x.days, x.closed_on) for x in late] == [
        (3, 28, None),
        (8, 28, due + timedelta(days=28)),
        (1, 3, due + timedelta(days=3)),
    ]
    text = late_work_markdown(issues, RETRO_DAY, RETRO_DAY, f"x/activity/{RETROSPECTIVE}")
    assert text.splitlines() == [
        f"- #3 feature: due {due}, still open (28 days late on {RETRO_DAY})",
        f"- #8 legal: due {due}, closed {due + timedelta(days=28)} (28 days late)",
        f"- #1 blog-post: due {due}, closed {due + timedelta(days=3)} (3 days late)",
    ]
    # The same list every day after: open work is counted to the retrospective's day.
    later = RETRO_DAY + timedelta(days=5)
    assert late_work_markdown(issues, RETRO_DAY, later, f"x/activity/{RETROSPECTIVE}") == text


def test_late_work_is_promised_before_the_retrospective_and_none_is_said() -> None:
    early = late_work_markdown([], RETRO_DAY, RETRO_DAY - timedelta(days=1), "k")
    assert early.startswith(f"_Listed here from GitLab on {RETRO_DAY}")
    assert late_work_markdown([], RETRO_DAY, RETRO_DAY, "k") == (
        "None: every activity was closed by its due date."
    )


def test_only_a_description_with_the_placeholder_is_filled(
    playbook: Playbook, l3: LaunchRequest
) -> None:
    plan = plan_launch(l3, playbook, RETRO_DAY)
    retro = next(s for s in plan.issues if s.activity_key == RETROSPECTIVE)
    blog = next(s for s in plan.issues if s.activity_key == "blog-post")
    assert fill_for(blog, [], RETRO_DAY) == ""
    filled = issue_change(retro, None, refs={}, assignee_id=None, late_work="- #1 late")
    assert "- #1 late" in (filled.write.description or "")
    assert LATE_WORK not in (filled.write.description or "")


# --- success metrics and actuals ----------------------------------------------------------


def test_actuals_people_write_survive_a_rewrite_and_are_read_back(
    playbook: Playbook, l2: LaunchRequest
) -> None:
    request = with_metrics(l2)
    spec = next(
        s for s in plan_launch(request, playbook, LAUNCH).issues if s.activity_key == RETROSPECTIVE
    )
    managed = spec.description.replace(LATE_WORK, "None")
    written = compose_description(managed, spec.key)
    filled = written.replace(
        "| Weekly active users | 500 | Product dashboard |  |",
        "| Weekly active users | 500 | Product dashboard | 612 |",
    )
    existing = issue(9, spec.key, spec.due_date, description=filled, title=spec.title)
    existing = IssueState(**{**existing.__dict__, "labels": spec.labels})
    # Entering an actual is not drift ...
    assert diff_issue(spec, existing, managed=managed, assignee_id=None).description is None
    # ... and a rewrite (the late list changed) keeps it.
    write = diff_issue(spec, existing, managed=managed.replace("None", "- #1"), assignee_id=None)
    assert "| Weekly active users | 500 | Product dashboard | 612 |" in (write.description or "")
    assert read_actuals(write.description or "", METRICS) == {"Weekly active users": "612"}
    # Text people write below the key line is not read as an actual.
    below = written + "\n| Trials started | 200 | Salesforce report | 999 |"
    assert read_actuals(below, METRICS) == {}
    assert split_description(below)[1] == spec.key


def test_metrics_table_is_empty_without_metrics(l3: LaunchRequest) -> None:
    assert metrics_table(l3) == ""


@pytest.mark.parametrize(
    ("metrics", "words"),
    [
        ([{"name": "A|B", "target": "1", "source": "s"}], "'|' cannot be used"),
        (
            [{"name": "Users", "target": "1", "source": "s"}] * 2,
            "listed twice",
        ),
        ([{"name": "Users", "target": "1", "source": "s"}] * 11, "at most 10"),
        ([{"name": "Users", "target": "x" * 121, "source": "s"}], "success_metrics[0].target"),
        ([{"name": "Users", "target": "1"}], "success_metrics[0].source"),
    ],
)
def test_success_metrics_are_bounded(
    l3: LaunchRequest, metrics: list[dict[str, str]], words: str
) -> None:
    data = {**l3.model_dump(mode="json"), "success_metrics": metrics}
    with pytest.raises(LaunchFileError) as exc:
        parse_launch_request(data)
    assert words in str(exc.value)


def test_the_launch_form_shows_success_metrics() -> None:
    from prefect.utilities.callables import parameter_schema

    from tminus.flows.launch import launch

    schema = parameter_schema(launch).model_dump_for_openapi()
    metric = schema["definitions"]["SuccessMetric"]
    assert set(metric["properties"]) == {"name", "target", "source"}
    assert all(p.get("description") for p in metric["properties"].values())


# --- the audit after launch day ------------------------------------------------------------


def work(today: date, retro_closed: bool = False, description: str = "") -> list[IssueState]:
    due = LAUNCH - timedelta(days=21)
    return [
        issue(1, "x/activity/blog-post", due, closed=due),
        issue(2, "x/activity/docs-update", due),  # overdue, open
        issue(
            3,
            f"x/activity/{RETROSPECTIVE}",
            RETRO_DAY,
            closed=today if retro_closed else None,
            description=description,
        ),
    ]


def run_audit(today: date, **kw) -> object:
    retro_closed = kw.pop("retro_closed", False)
    description = kw.pop("description", "")
    return audit_launch(
        "x",
        "X",
        LAUNCH,
        work(today, retro_closed, description),
        today,
        retro_key=f"x/activity/{RETROSPECTIVE}",
        **kw,
    )


def test_status_is_launched_from_launch_day() -> None:
    before = run_audit(LAUNCH - timedelta(days=1))
    assert before.status == "at-risk"  # type: ignore[attr-defined]
    for day in (LAUNCH, LAUNCH + timedelta(days=40)):
        assert run_audit(day).status == "launched"  # type: ignore[attr-defined]


def test_readiness_leaves_out_work_due_after_launch_day() -> None:
    audit = run_audit(LAUNCH - timedelta(days=1))
    assert (audit.done, audit.total) == (1, 2)  # type: ignore[attr-defined]
    overdue = run_audit(RETRO_DAY + timedelta(days=2)).overdue  # type: ignore[attr-defined]
    assert [o.issue.iid for o in overdue] == [2, 3]  # the retrospective is reminded about


def test_the_tracking_issue_closes_when_the_retrospective_does() -> None:
    day = RETRO_DAY + timedelta(days=1)
    assert not run_audit(day).close_tracking  # type: ignore[attr-defined]
    assert run_audit(day, retro_closed=True).close_tracking  # type: ignore[attr-defined]
    note = audit_note(run_audit(day, retro_closed=True), "pmm")  # type: ignore[arg-type]
    assert "| retrospective | #3, closed |" in note


def test_metrics_are_reported_from_t_plus_30_and_hold_closing_until_then() -> None:
    table = "| Weekly active users | 500 | Product dashboard | 612 @all |"
    description = compose_description(f"{metrics_table_of()}\n{table}", "x/activity/retro")
    early = RETRO_DAY + timedelta(days=1)
    kw = {"metrics": METRICS, "actuals": read_actuals(description, METRICS)}
    before = run_audit(early, retro_closed=True, **kw)
    assert not before.close_tracking  # type: ignore[attr-defined]
    assert "Success metrics" not in audit_note(before, "pmm")  # type: ignore[arg-type]

    day30 = LAUNCH + timedelta(days=30)
    after = run_audit(day30, retro_closed=True, **kw)
    # One actual is missing: reported, and the launch stays open for it for 14 days.
    assert not after.close_tracking  # type: ignore[attr-defined]
    late = run_audit(day30 + timedelta(days=14), retro_closed=True, **kw)
    assert late.close_tracking  # type: ignore[attr-defined]
    both = {**kw["actuals"], "Trials started": "230"}  # type: ignore[dict-item]
    entered = run_audit(day30, retro_closed=True, metrics=METRICS, actuals=both)
    assert entered.close_tracking  # type: ignore[attr-defined]
    note = audit_note(after, "pmm")  # type: ignore[arg-type]
    assert f"**Success metrics** (from {day30}; actuals as entered in #3)" in note
    assert "| Weekly active users | 500 | 612 @\u2060all | Product dashboard |" in note
    assert "| Trials started | 200 | not entered yet | Salesforce report |" in note


def metrics_table_of() -> str:
    return "| metric | target | source | actual |\n|---|---|---|---|"


def test_tiers_have_one_retrospective_each(playbook: Playbook) -> None:
    retro = playbook.activity(RETROSPECTIVE)
    assert retro.lead_time_days == -7 and retro.owner_role == "pmm"
    assert set(retro.tiers) == set(Tier)
