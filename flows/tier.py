"""The recommend-tier flow: the tier questionnaire as a Prefect form, its answer as an artifact.

No ``from __future__ import annotations``: deployment runs validate parameters against the
flow's signature (see flows/launch.py).
"""

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from tminus.domain.request import Key
from tminus.domain.tiering import TierAssessment, recommend, recommendation_markdown
from tminus.integrations.gitlab_repo import team_playbook
from tminus.settings import load_settings


@flow(name="recommend-tier")
def recommend_tier(assessment: TierAssessment, launch: Key | None = None) -> dict[str, Any]:
    """Answer the tier questionnaire; the run recommends L1, L2 or L3 with its reasons, scored
    by the team's playbook (its `tier_recommendation`), and keeps the answers and the result
    as an artifact. Put the answers in the launch file as `tier_assessment` to record them."""
    playbook = team_playbook(load_settings())
    rec = recommend(assessment, playbook.tier_recommendation)
    create_markdown_artifact(
        key=f"tier-{launch}" if launch else "tier-recommendation",
        markdown=recommendation_markdown(rec, assessment),
        description=f"Recommended tier {rec.tier.value}" + (f" for {launch}" if launch else ""),
    )
    get_run_logger().info("Recommended %s: %s", rec.tier.value, "; ".join(rec.reasons))
    return {"tier": rec.tier.value, "score": rec.score, "reasons": list(rec.reasons)}
