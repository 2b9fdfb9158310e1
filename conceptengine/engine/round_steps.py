"""The steps of a run by name, in the order they run, and the fields of a round's summary: declared once.

The steps write under these names (RUN/round-RRRR/<step>/), and everything that reads a run back — the
pipeline, `conceptengine status`, the round table, the review dashboard, the model registry, verifier
training data — finds them by the same names. Like the table schemas (tables.py), this is the layout of a
run's outputs, so it lives with the framework, below every reader.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypedDict


class Step(StrEnum):
    INGEST = "ingest"
    GOLD = "gold"
    PROPOSE_NPS = "propose_nps"
    PROPOSE_MASKS = "propose_masks"
    AI_VERIFY = "ai_verify"
    CALIBRATE = "calibrate"
    ROUTE = "route"
    HUMAN_REVIEW = "human_review"
    COMMIT = "commit"
    RETRAIN = "retrain"
    PROMOTE = "promote"
    RETRAIN_VERIFIERS = "retrain_verifiers"
    EVALUATE = "evaluate"


# Round 0 lists the pool, fixes the gold set and evaluates the starting checkpoint.
BOOTSTRAP_STEPS = (Step.INGEST, Step.GOLD, Step.EVALUATE)
# Rounds 1..N, in order; retrain + promote and retrain_verifiers run only on their cadences.
ROUND_STEPS = (
    Step.CALIBRATE, Step.PROPOSE_NPS, Step.PROPOSE_MASKS, Step.AI_VERIFY, Step.ROUTE, Step.HUMAN_REVIEW,
    Step.COMMIT, Step.RETRAIN, Step.PROMOTE, Step.RETRAIN_VERIFIERS, Step.EVALUATE,
)  # fmt: skip
SAM3_RETRAIN_STEPS = (Step.RETRAIN, Step.PROMOTE)
VERIFIER_RETRAIN_STEPS = (Step.RETRAIN_VERIFIERS,)
CADENCED_STEPS = SAM3_RETRAIN_STEPS + VERIFIER_RETRAIN_STEPS
EVERY_ROUND_STEPS = tuple(s for s in ROUND_STEPS if s not in CADENCED_STEPS)


class RoundSummary(TypedDict, total=False):
    """One row of the round table (RUN/round-RRRR/summary.json). The pipeline fills the first group itself;
    every other field is copied from the manifest of the step that measured it."""

    round: int
    pairs_positive: int
    pairs_negative: int
    masks_proposed: int
    errors: int
    quarantined: int
    # calibrate / route
    thresholds: dict[str, Any]
    calibration_items: dict[str, int]  # per task
    auto_accepted: int
    auto_rejected: int
    to_human: int
    audited: int
    human_share: float
    # human_review / commit
    human_tasks: int
    human_seconds: float
    committed_pairs: int
    committed_negative: int
    committed_masks: int
    # promote / retrain_verifiers: the round's retrained candidate (null in a round without a retrain)
    candidate_cgF1: float | None
    promoted: bool | None
    verifiers_promoted: list[str]
    # evaluate: the model promoted after the round on gold, overall and per group (gold_eval.py)
    model_version: str
    gold_cgF1: float
    gold_IL_MCC: float
    gold_pmF1: float
    reported_cgF1: float
    reported_IL_MCC: float
    reported_pmF1: float
    domain_cgF1: float
    domain_IL_MCC: float
    domain_pmF1: float
    seen_cgF1: float
    seen_IL_MCC: float
    seen_pmF1: float
    # evaluate, with ground truth: what the round committed
    precision: float
    pair_precision: float
    recall: float
    negative_precision: float


_PIPELINE_FIELDS = ("round", "pairs_positive", "pairs_negative", "masks_proposed", "errors", "quarantined")
# The fields a round's summary copies from its steps' manifests.
MEASURED_FIELDS = tuple(k for k in RoundSummary.__annotations__ if k not in _PIPELINE_FIELDS)
