"""Tier recommendation: the questionnaire scored by the playbook, hard rules first, the decision
and any override recorded on the tracking issue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tminus.deployments.cli import main
from tminus.domain.planner import check_request
from tminus.domain.playbook import Playbook, parse_playbook_file
from tminus.domain.request import LaunchRequest
from tminus.domain.tiering import Tier, TierAssessment, TierScoring, recommend
from tminus.integrations.files import default_playbook_path, load_launch_file

from .conftest import ROOT, SandboxClient
from .test_launch_everything import retarget

EXAMPLES = ROOT / "examples"


@pytest.mark.parametrize(("name", "tier"), [("l1", "L1"), ("l2", "L2"), ("l3", "L3")])
def test_the_examples_questionnaires_recommend_their_tiers(
    name: str, tier: str, playbook: Playbook
) -> None:
    request = load_launch_file(EXAMPLES / f"{name}.yaml")
    assert request.tier_assessment is not None
    rec = recommend(request.tier_assessment, playbook.tier_recommendation)
    assert rec.tier.value == tier == request.tier.value
    check_request(request, playbook)  # no override needed


def test_the_reasons_say_what_scored_and_which_rule_won(playbook: Playbook) -> None:
    l1 = load_launch_file(EXAMPLES / "l1.yaml").tier_assessment
    assert l1 is not None
    rec = recommend(l1, playbook.tier_recommendation)
    assert rec.rule == "a new SKU or a pricing change is always L1"
    assert "+3 changes positioning" in rec.reasons and rec.reasons[-1].startswith("rule: ")
    l2 = load_launch_file(EXAMPLES / "l2.yaml").tier_assessment
    assert l2 is not None
    reasons = recommend(l2, playbook.tier_recommendation).reasons
    assert reasons == (
        "+2 contributes to the product direction",
        "+2 considerable customer demand",
        "+1 noticed by some",
        "score 5 reaches L2 (4), not L1 (9)",
    )


def test_a_changed_weight_in_the_playbook_changes_the_result(tmp_path: Path) -> None:
    data = yaml.safe_load(default_playbook_path().read_text())
    data["tier_recommendation"] = {
        "weights": {"ux_improvement": 5},
        "thresholds": {"L1": 9, "L2": 4},
    }
    changed = parse_playbook_file(yaml.safe_dump(data).encode(), "team.yaml")
    l3 = load_launch_file(EXAMPLES / "l3.yaml")
    assert l3.tier_assessment is not None
    assert recommend(l3.tier_assessment, changed.tier_recommendation).tier is Tier.L2
    # The file's L3 is now not the recommendation: the plan says so, naming the fix.
    from datetime import date

    from tminus.domain.planner import plan_launch

    plan = plan_launch(l3, changed, date(2026, 11, 23))
    assert any(
        "tier L3 is not the questionnaire's recommendation, L2 (score 7)" in w
        and "tier_override" in w
        for w in plan.warnings
    )
    assert "Chosen: **L3**, with no override recorded." in plan.tracking.description


def test_a_positioning_change_is_at_least_l2_whatever_the_score() -> None:
    answers = TierAssessment(positioning_change=True, audience="niche")  # type: ignore[arg-type]
    scoring = TierScoring(weights={"positioning_change": 0})
    rec = recommend(answers, scoring)
    assert (rec.tier, rec.score, rec.rule) == (Tier.L2, 0, "a positioning change is at least L2")


@pytest.mark.parametrize(
    ("scoring", "message"),
    [
        ({"thresholds": {"L1": 3, "L2": 5}}, "L2 (5) must be above 0 and below L1 (3)"),
        ({"weights": {"helps_compete": 50}}, "helps_compete: 50 points; give 0 to 20"),
        ({"weights": {"is_cool": 1}}, "is_cool"),
    ],
)
def test_a_bad_scoring_section_names_the_field(scoring: dict[str, Any], message: str) -> None:
    data = yaml.safe_load(default_playbook_path().read_text())
    data["tier_recommendation"] = scoring
    with pytest.raises(Exception, match="tier_recommendation") as err:
        parse_playbook_file(yaml.safe_dump(data).encode(), "team.yaml")
    assert message in str(err.value)


def test_an_override_shows_on_the_tracking_issue_with_who_and_why(
    sandbox: SandboxClient, settings: Any, prefect_server: str
) -> None:
    from tminus.flows.launch import launch

    request = retarget(load_launch_file(EXAMPLES / "l2.yaml"), sandbox.url)
    data = request.model_dump(mode="json")
    data.update(
        tier="L1",
        optional_activities=[],
        tier_override={"by": "@vp.marketing", "why": "Launching at our user conference."},
    )
    chosen = LaunchRequest.model_validate(data)
    launch(request=chosen)
    project = sandbox.gitlab().projects.get(request.project)
    [tracking] = project.issues.list(labels=["launch-issue::tracking"], get_all=True)
    assert "The questionnaire recommends **L2**" in tracking.description
    assert (
        "Chosen: **L1** by @vp.marketing, overriding it: Launching at our user conference."
        in tracking.description
    )


def test_the_recommend_tier_flow_keeps_its_answer_as_an_artifact(
    settings: Any, prefect_server: str
) -> None:
    from prefect.client.orchestration import get_client

    from tminus.flows.tier import recommend_tier

    out = recommend_tier(assessment=TierAssessment(new_sku_or_pricing=True), launch="new-sku")
    assert out["tier"] == "L1" and out["reasons"][-1].startswith("rule: a new SKU")

    async def artifact() -> Any:
        async with get_client() as client:
            return await client.read_latest_artifacts()

    import asyncio

    latest = {a.key: a for a in asyncio.run(artifact())}
    assert "Recommended tier: L1" in latest["tier-new-sku"].data


def test_tminus_tier_reads_a_launch_file_and_says_when_its_tier_differs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load((EXAMPLES / "l3.yaml").read_text())
    data["tier_assessment"]["customer_demand"] = True  # 1 + 2 + 2 = 5: L2
    path = tmp_path / "l3.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["tier", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Recommended tier: L2" in out and "The file says tier L3" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("tier_assessment:\n  audience: galaxy\n")
    assert main(["tier", str(bad)]) == 2
    assert "tier_assessment.audience" in capsys.readouterr().err
