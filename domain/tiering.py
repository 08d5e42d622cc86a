"""Tier recommendation (pure): the questionnaire a PMM answers, scored by the playbook.

GitLab's product marketing reviews a release item when any of these is true: it contributes to
the product direction, increases category maturity, helps compete, answers considerable
customer demand, or is a significant UX improvement. A new SKU or pricing change forces L1; a
positioning change means at least L2. ``TierScoring`` (the playbook's ``tier_recommendation``)
holds the weights, the thresholds and those hard rules as data, so a team changes its tiering
without code; hard rules win over the score.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Tier(str, Enum):
    """How big a launch is; decides which activities it gets."""

    L1 = "L1"
    L2 = "L2"
    L3 = "L3"

    @property
    def size(self) -> str:
        return {"L1": "Large", "L2": "Medium", "L3": "Small"}[self.value]

    @property
    def rank(self) -> int:
        """Bigger tiers rank higher: L3 0, L2 1, L1 2."""
        return {"L3": 0, "L2": 1, "L1": 2}[self.value]


class Audience(str, Enum):
    niche = "niche"
    some = "some"
    everyone = "everyone"


Criterion = Literal[
    "new_sku_or_pricing",
    "positioning_change",
    "product_direction",
    "category_maturity",
    "helps_compete",
    "customer_demand",
    "ux_improvement",
]

# The questions, in the order they are asked (terminal and form).
QUESTIONS: dict[str, str] = {
    "new_sku_or_pricing": "Does it introduce a new SKU or change pricing?",
    "positioning_change": "Does it change how the product is positioned?",
    "product_direction": "Does it contribute to the product direction?",
    "category_maturity": "Does it increase a category's maturity?",
    "helps_compete": "Does it help us compete?",
    "customer_demand": "Is there considerable customer demand for it?",
    "ux_improvement": "Is it a significant UX improvement?",
}
AUDIENCE_QUESTION = "Who will notice it: a niche, some users, or everyone?"


class TierAssessment(BaseModel):
    """The tier questionnaire's answers (the criteria GitLab's product marketing scores)."""

    model_config = ConfigDict(extra="forbid")

    new_sku_or_pricing: bool = Field(default=False, description=QUESTIONS["new_sku_or_pricing"])
    positioning_change: bool = Field(default=False, description=QUESTIONS["positioning_change"])
    product_direction: bool = Field(default=False, description=QUESTIONS["product_direction"])
    category_maturity: bool = Field(default=False, description=QUESTIONS["category_maturity"])
    helps_compete: bool = Field(default=False, description=QUESTIONS["helps_compete"])
    customer_demand: bool = Field(default=False, description=QUESTIONS["customer_demand"])
    ux_improvement: bool = Field(default=False, description=QUESTIONS["ux_improvement"])
    audience: Audience = Field(default=Audience.some, description=AUDIENCE_QUESTION)


class TierRule(BaseModel):
    """A hard rule: when ``when`` is answered yes, the tier is at least ``tier``."""

    model_config = ConfigDict(extra="forbid")

    when: Criterion
    tier: Tier
    reason: str = Field(min_length=3, max_length=200)


class TierScoring(BaseModel):
    """How the playbook turns answers into a tier: points per yes, per audience; a score at or
    above a threshold reaches that tier; hard rules raise the tier whatever the score."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[Criterion, int] = Field(
        default={
            "positioning_change": 3,
            "product_direction": 2,
            "category_maturity": 1,
            "helps_compete": 2,
            "customer_demand": 2,
            "ux_improvement": 1,
        },
        description="Points for each criterion answered yes (0 to 20).",
    )
    audience: dict[Audience, int] = Field(
        default={Audience.niche: 0, Audience.some: 1, Audience.everyone: 2},
        description="Points for how many notice it.",
    )
    thresholds: dict[Literal["L1", "L2"], int] = Field(
        default={"L1": 9, "L2": 4}, description="Least score for L1 and for L2."
    )
    rules: list[TierRule] = Field(
        default=[
            TierRule(
                when="new_sku_or_pricing",
                tier=Tier.L1,
                reason="a new SKU or a pricing change is always L1",
            ),
            TierRule(
                when="positioning_change",
                tier=Tier.L2,
                reason="a positioning change is at least L2",
            ),
        ],
        max_length=20,
    )

    @model_validator(mode="after")
    def _sane(self) -> TierScoring:
        for name, points in [*self.weights.items(), *self.audience.items()]:
            if not 0 <= points <= 20:
                raise ValueError(f"{name}: {points} points; give 0 to 20")
        if set(self.thresholds) != {"L1", "L2"}:
            raise ValueError("thresholds: give both L1 and L2, e.g. {L1: 9, L2: 4}")
        if not 0 < self.thresholds["L2"] < self.thresholds["L1"] <= 200:
            raise ValueError(
                f"thresholds: L2 ({self.thresholds['L2']}) must be above 0 and below L1 "
                f"({self.thresholds['L1']})"
            )
        return self


@dataclass(frozen=True)
class TierRecommendation:
    tier: Tier
    score: int
    reasons: tuple[str, ...]  # each point scored, the threshold, any rule that won
    rule: str | None = None  # the hard rule that decided, if one did

    def summary(self) -> str:
        decided = f"rule: {self.rule}" if self.rule else f"score {self.score}"
        return f"{self.tier.value} ({decided})"


_SHORT = {
    "new_sku_or_pricing": "a new SKU or pricing change",
    "positioning_change": "changes positioning",
    "product_direction": "contributes to the product direction",
    "category_maturity": "increases category maturity",
    "helps_compete": "helps compete",
    "customer_demand": "considerable customer demand",
    "ux_improvement": "significant UX improvement",
}


def recommend(assessment: TierAssessment, scoring: TierScoring) -> TierRecommendation:
    """The tier the answers recommend under ``scoring``, with the reasons a PMM reads."""
    reasons: list[str] = []
    score = 0
    for name in QUESTIONS:
        if getattr(assessment, name):
            points = scoring.weights.get(name, 0)  # type: ignore[call-overload]
            score += points
            if points:
                reasons.append(f"+{points} {_SHORT[name]}")
    points = scoring.audience.get(assessment.audience, 0)
    score += points
    reasons.append(f"+{points} noticed by {assessment.audience.value}")
    if score >= scoring.thresholds["L1"]:
        tier = Tier.L1
        reasons.append(f"score {score} reaches L1 ({scoring.thresholds['L1']})")
    elif score >= scoring.thresholds["L2"]:
        tier = Tier.L2
        reasons.append(
            f"score {score} reaches L2 ({scoring.thresholds['L2']}), "
            f"not L1 ({scoring.thresholds['L1']})"
        )
    else:
        tier = Tier.L3
        reasons.append(f"score {score} is below L2 ({scoring.thresholds['L2']})")
    decided_by = None
    for rule in scoring.rules:  # a hard rule decides when it asks as much as the score or more
        if getattr(assessment, rule.when) and rule.tier.rank >= tier.rank:
            tier, decided_by = rule.tier, rule.reason
    if decided_by:
        reasons.append(f"rule: {decided_by}")
    return TierRecommendation(tier, score, tuple(reasons), decided_by)


def recommendation_markdown(rec: TierRecommendation, assessment: TierAssessment) -> str:
    """The recommendation for an artifact or the terminal."""
    lines = [f"# Recommended tier: {rec.tier.value} ({rec.tier.size})", "", "## Why", ""]
    lines += [f"- {reason}" for reason in rec.reasons]
    lines += ["", "## Answers", ""]
    for name, question in QUESTIONS.items():
        lines.append(f"- {question} **{'yes' if getattr(assessment, name) else 'no'}**")
    lines.append(f"- {AUDIENCE_QUESTION} **{assessment.audience.value}**")
    return "\n".join(lines) + "\n"
