"""The planner, exhaustively: every tier, every combination of optional activities."""

from __future__ import annotations

import itertools
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tminus.domain.plan import REF_PATTERN, IssueRole
from tminus.domain.planner import fit_to_tier, plan_launch
from tminus.domain.playbook import Frequency, Kind, Playbook
from tminus.domain.request import LaunchRequest, Tier
from tminus.errors import LaunchFileError

from .conftest import TODAY


def combos(playbook: Playbook, tier: Tier) -> list[tuple[str, ...]]:
    keys = playbook.sometimes_keys(tier)
    return [c for n in range(len(keys) + 1) for c in itertools.combinations(keys, n)]


def all_cases(playbook: Playbook) -> list[tuple[Tier, tuple[str, ...]]]:
    return [(tier, combo) for tier in Tier for combo in combos(playbook, tier)]


def test_every_tier_and_option_combination(playbook: Playbook, l2: LaunchRequest) -> None:
    cases = all_cases(playbook)
    assert len(cases) > 10  # the default playbook has options for L2 and L3
    for tier, combo in cases:
        request = l2.model_copy(update={"tier": tier, "optional_activities": list(combo)})
        plan = plan_launch(request, playbook, TODAY)
        wanted = {
            a.key
            for a in playbook.activities
            if a.tiers.get(tier) is Frequency.always or a.key in combo
        }
        planned_issue_acts = {s.activity_key for s in plan.issues if s.role is IssueRole.activity}
        assert planned_issue_acts == {
            a.key for a in playbook.activities if a.key in wanted and a.kind is Kind.issue
        }, (tier, combo)
        assert {c.activity_key for c in plan.calendar} == {"launch-day"} | {
            a.key for a in playbook.activities if a.key in wanted and a.kind is Kind.calendar
        }
        assert {c.activity_key for c in plan.checks} == {
            a.key for a in playbook.activities if a.key in wanted and a.kind is Kind.page_check
        }
        has_note = any(a.kind is Kind.notification for a in playbook.activities if a.key in wanted)
        assert (plan.notification is not None) == has_note
        # keys are unique and all start with the launch slug
        keys = [s.key for s in plan.all_issues] + [c.key for c in plan.calendar]
        assert len(keys) == len(set(keys))
        assert all(k.startswith(f"{request.slug}/") for k in keys)
        # every issue carries the tier and launch labels
        for spec in plan.all_issues:
            assert f"launch-tier::{tier.value}" in spec.labels
            assert f"launch::{request.slug}" in spec.labels
        # the tracking checklist references every other issue and lists every activity
        refs = set(REF_PATTERN.findall(plan.tracking.description))
        assert refs == {s.key for s in plan.issues}
        for key in wanted:
            title = playbook.activity(key).title
            assert f"**{title}**" in plan.tracking.description


def test_l1_example_has_tracking_activity_and_sister_issues(
    playbook: Playbook, l1: LaunchRequest
) -> None:
    plan = plan_launch(l1, playbook, TODAY)
    l1_issue_acts = [a for a in playbook.activities if Tier.L1 in a.tiers and a.kind is Kind.issue]
    activity = [s for s in plan.issues if s.role is IssueRole.activity]
    sister = [s for s in plan.issues if s.role is IssueRole.sister]
    assert len(activity) == len(l1_issue_acts) == 14  # with the retrospective
    assert [s.key for s in sister] == [
        "code-review-agent/sister/code-review-agent",
        "code-review-agent/sister/review-policies",
    ]
    assert plan.tracking.due_date == l1.launch_date
    assert all(s.due_date is not None for s in plan.all_issues)
    assert plan.warnings == ()


def test_due_dates_count_back_from_launch_day(playbook: Playbook, l1: LaunchRequest) -> None:
    plan = plan_launch(l1, playbook, TODAY)
    for spec in plan.issues:
        if spec.role is IssueRole.activity:
            lead = playbook.activity(spec.activity_key or "").lead_time_days
            assert spec.due_date == l1.launch_date - timedelta(days=lead)
        else:
            assert spec.due_date == l1.launch_date - timedelta(
                days=playbook.sister_issue.lead_time_days
            )


def test_moved_launch_date_moves_dates_and_keeps_keys(
    playbook: Playbook, l1: LaunchRequest
) -> None:
    before = plan_launch(l1, playbook, TODAY)
    moved = l1.model_copy(update={"launch_date": l1.launch_date + timedelta(days=7)})
    after = plan_launch(moved, playbook, TODAY)
    assert [s.key for s in before.all_issues] == [s.key for s in after.all_issues]
    for old, new in zip(before.all_issues, after.all_issues, strict=True):
        assert new.due_date == old.due_date + timedelta(days=7)  # type: ignore[operator]
    assert [c.day + timedelta(days=0) for c in after.calendar] == [
        c.day + timedelta(days=7) for c in before.calendar
    ]


def test_past_due_activities_are_flagged_not_dropped(playbook: Playbook, l1: LaunchRequest) -> None:
    # 30 days before launch: everything with a lead time over 30 days is already late.
    today = l1.launch_date - timedelta(days=30)
    plan = plan_launch(l1, playbook, today)
    on_time = plan_launch(l1, playbook, TODAY)
    assert [s.key for s in plan.all_issues] == [s.key for s in on_time.all_issues]
    late = {s.activity_key for s in plan.issues if s.overdue and s.activity_key}
    expected = {
        a.key
        for a in playbook.activities
        if a.kind is Kind.issue and Tier.L1 in a.tiers and a.lead_time_days > 30
    }
    assert late == expected == {"sales-enablement", "livestream", "press-outreach"}
    assert all(s.overdue for s in plan.issues if s.role is IssueRole.sister)  # 35 > 30
    assert not plan.tracking.overdue
    assert len(plan.warnings) == len(expected) + 2  # + two sister issues
    assert all("days ago" in w for w in plan.warnings)


def test_due_today_is_not_overdue(playbook: Playbook, l3: LaunchRequest) -> None:
    plan = plan_launch(l3, playbook, l3.launch_date)
    social = next(s for s in plan.issues if s.activity_key == "social-promotion")
    assert social.due_date == l3.launch_date and not social.overdue


def test_launch_in_the_past_warns(playbook: Playbook, l3: LaunchRequest) -> None:
    plan = plan_launch(l3, playbook, l3.launch_date + timedelta(days=1))
    assert plan.tracking.overdue
    assert plan.warnings[0] == f"launch day {l3.launch_date} is in the past"


def test_same_inputs_same_plan(playbook: Playbook, l1: LaunchRequest) -> None:
    assert plan_launch(l1, playbook, TODAY) == plan_launch(l1, playbook, TODAY)


def test_tier_change_keeps_shared_keys(playbook: Playbook, l1: LaunchRequest) -> None:
    l1_plan = plan_launch(l1, playbook, TODAY)
    l3_plan = plan_launch(l1.model_copy(update={"tier": Tier.L3}), playbook, TODAY)
    l3_keys = {s.key for s in l3_plan.all_issues}
    assert l3_keys < {s.key for s in l1_plan.all_issues}


def test_assignees_follow_the_team_and_default_pmm_to_owner(
    playbook: Playbook, l1: LaunchRequest
) -> None:
    plan = plan_launch(l1, playbook, TODAY)
    by_act = {s.activity_key: s.assignee for s in plan.issues if s.activity_key}
    assert by_act["docs-update"] == "dana.docs"
    assert by_act["blog-post"] == "priya.pmm"  # pmm role -> owner
    assert by_act["legal-review"] is None  # legal not in team
    assert plan.tracking.assignee == "priya.pmm"


def test_extra_labels_reach_every_issue(playbook: Playbook, l1: LaunchRequest) -> None:
    plan = plan_launch(l1, playbook, TODAY)
    assert all("ai" in s.labels for s in plan.all_issues)
    assert len(plan.labels()) == len(set(plan.labels()))


@pytest.mark.parametrize(
    "tier,options,problem",
    [
        (Tier.L3, ["livestream"], "not available for L3 (only L1)"),
        (Tier.L1, ["launch-video"], "already always part of L1"),
        (Tier.L2, ["no-such-thing"], "no such activity"),
    ],
)
def test_impossible_options_fail_before_planning(
    playbook: Playbook, l2: LaunchRequest, tier: Tier, options: list[str], problem: str
) -> None:
    request = l2.model_copy(update={"tier": tier, "optional_activities": options})
    with pytest.raises(LaunchFileError) as err:
        plan_launch(request, playbook, TODAY)
    (line,) = err.value.problems
    assert line.startswith("optional_activities[0]: got ")
    assert problem in line


def test_unknown_team_role_is_named(playbook: Playbook, l2: LaunchRequest) -> None:
    request = l2.model_copy(update={"team": {"wizards": "merlin"}})
    with pytest.raises(LaunchFileError, match=r"team.wizards: unknown role; roles in playbook"):
        plan_launch(request, playbook, TODAY)


def test_approval_follows_playbook_tiers(playbook: Playbook, l1: LaunchRequest) -> None:
    assert plan_launch(l1, playbook, TODAY).notification.needs_approval  # type: ignore[union-attr]
    l2 = l1.model_copy(update={"tier": Tier.L2})
    assert not plan_launch(l2, playbook, TODAY).notification.needs_approval  # type: ignore[union-attr]
    relaxed = playbook.model_copy(update={"approval_tiers": []})
    assert not plan_launch(l1, relaxed, TODAY).notification.needs_approval  # type: ignore[union-attr]


def test_planner_reads_no_clock(playbook: Playbook, l1: LaunchRequest) -> None:
    far = plan_launch(l1, playbook, date(2000, 1, 1))
    assert far.today == date(2000, 1, 1) and far.warnings == ()


def test_fit_to_tier_drops_options_the_new_tier_does_not_take(
    playbook: Playbook, l2: LaunchRequest
) -> None:
    as_l1, notes = fit_to_tier(l2.model_copy(update={"tier": Tier.L1}), playbook)
    assert as_l1.optional_activities == []
    assert notes == [
        "optional activity 'features-page' is always on for L1; ignored",
        "optional activity 'features-page-check' is always on for L1; ignored",
    ]
    plan_launch(as_l1, playbook, TODAY)  # plannable now
    same, none = fit_to_tier(l2, playbook)
    assert same == l2 and none == []


# --- bounds: a plan is always deliverable, or fails before anything is written -------------


def _playbook_with(description: str = "", title: str | None = None) -> Playbook:
    import yaml

    from tminus.domain.playbook import parse_playbook
    from tminus.integrations.files import default_playbook_path

    data = yaml.safe_load(default_playbook_path().read_text())
    if description:
        data["activities"][0]["description"] = description
    if title:
        data["activities"][0]["title"] = title
    return parse_playbook(data, "acme.yaml")


def test_a_template_that_fails_for_this_launch_names_the_entry(l1: LaunchRequest) -> None:
    from tminus.errors import PlaybookError

    # The sample launches have one feature, so the trial render passes; l1 has two.
    playbook = _playbook_with(description="{{ 100 // (launch.features|length - 2) }}")
    with pytest.raises(PlaybookError) as err:
        plan_launch(l1, playbook, TODAY)
    assert str(err.value).startswith("acme.yaml is not valid")
    (problem,) = err.value.problems
    assert problem.startswith("activities[0] (blog-post).description: template error: ")
    assert "ZeroDivisionError" in problem


def test_a_title_too_long_for_this_launch_names_the_entry(l1: LaunchRequest) -> None:
    from tminus.errors import PlaybookError

    playbook = _playbook_with(title="{{ 'x' * 250 if launch.features|length > 1 else 'Blog' }}")
    with pytest.raises(PlaybookError) as err:
        plan_launch(l1, playbook, TODAY)
    (problem,) = err.value.problems
    assert problem.startswith("activities[0] (blog-post).title: makes an issue title of 269")


@settings(max_examples=60, deadline=None)
@given(
    day=st.dates(),
    title=st.integers(3, 120),
    features=st.integers(1, 20),
    name=st.integers(2, 110),
)
def test_any_launch_file_plans_deliverably_or_is_refused(
    day: date, title: int, features: int, name: int
) -> None:
    from tminus.domain.request import parse_launch_request
    from tminus.errors import LaunchFileError
    from tminus.integrations.files import load_playbook

    data = {
        "slug": "s" * 48,
        "title": "T" * title,
        "tier": "L1",
        "launch_date": day.isoformat(),
        "owner": "o" * 255,
        "project": "/".join(["g" * 255] * 4),
        "features": [
            {
                "name": f"{i:03d}" + "n" * name,
                "summary": "s" * 280,
                "docs_urls": [f"https://docs.example.com/{i}/{j}/" + "p" * 2000 for j in range(5)],
                "features_page_title": "f" * 120,
                "selling_points": ["p" * 280] * 8,
                "limitations": ["l" * 280] * 8,
            }
            for i in range(features)
        ],
        "labels": ["l" * 250 + str(i) for i in range(20)],
    }
    try:
        request = parse_launch_request(data)
    except LaunchFileError as exc:
        fields = {p.split(":")[0] for p in exc.problems}
        assert fields <= {"launch_date", "features"} and fields
        assert ("launch_date" in fields) == (not date(2000, 1, 1) <= day <= date(2100, 12, 31))
        # every docs link lands in the docs issue: their total is bounded
        docs = sum(len(u) for f in data["features"] for u in f["docs_urls"])  # type: ignore[attr-defined]
        assert ("features" in fields) == (docs > 40_000)
        return
    plan = plan_launch(request, load_playbook(), TODAY)
    specs = [plan.tracking, *plan.issues]
    assert all(len(s.title) <= 255 for s in specs)
    assert all(len(c.title) <= 255 for c in plan.calendar)
    assert all(len(s.description) <= 1_048_576 for s in specs)
    assert all(len(label) <= 255 for s in specs for label in s.labels)
    for spec_day in [s.due_date for s in specs] + [c.day for c in plan.calendar]:
        assert spec_day is not None
        spec_day + timedelta(days=1)  # Calendar's all-day end date exists


# --- dependencies -------------------------------------------------------------------------


def test_l1_public_comms_wait_for_review_and_legal_check(
    playbook: Playbook, l1: LaunchRequest
) -> None:
    plan = plan_launch(l1, playbook, TODAY)
    by_activity = {s.activity_key: s for s in plan.issues if s.activity_key}
    gates = (
        "code-review-agent/activity/marketing-review",
        "code-review-agent/activity/legal-review",
    )
    for key in ("social-promotion", "customer-comms", "dev-community-posts"):
        spec = by_activity[key]
        assert spec.depends_on == gates
        first = spec.description.splitlines()[0]
        assert (
            first
            == f"**Blocked by** [[ref:{gates[0]}]], [[ref:{gates[1]}]]: start once they are closed."
        )
    assert by_activity["blog-post"].depends_on == ()
    assert "Blocked by" not in by_activity["blog-post"].description
    assert plan.warnings == ()  # the gates are due before what waits for them


def test_a_dependency_the_tier_does_not_plan_is_dropped(
    playbook: Playbook, l2: LaunchRequest
) -> None:
    # The marketing review is L1 only: on L2, social promotion waits for the legal check alone.
    plan = plan_launch(l2, playbook, TODAY)
    social = next(s for s in plan.issues if s.activity_key == "social-promotion")
    assert social.depends_on == (f"{l2.slug}/activity/legal-review",)
    assert "start once it is closed" in social.description
    assert not any("marketing-review" in w for w in plan.warnings)


def test_a_dependency_due_after_what_waits_for_it_warns(l1: LaunchRequest) -> None:
    import yaml

    from tminus.domain.playbook import parse_playbook
    from tminus.integrations.files import default_playbook_path

    data = yaml.safe_load(default_playbook_path().read_text())
    for act in data["activities"]:
        if act["key"] == "blog-post":  # draft due 21 days before; the review 14 days before
            act["depends_on"] = ["marketing-review"]
    plan = plan_launch(l1, parse_playbook(data, "acme.yaml"), TODAY)
    review_due = l1.launch_date - timedelta(days=14)
    blog_due = l1.launch_date - timedelta(days=21)
    assert plan.warnings == (
        f"Launch blog post (blog-post) is due {blog_due} but waits for Marketing review of all "
        f"public comms (marketing-review), due {review_due}: move one of the lead times, or "
        "drop the dependency",
    )
