"""The image pipeline: which steps a round runs, in what order. Composition only; logic lives in engine/.

PROPOSE_NPS → PROPOSE_MASKS → AI_VERIFY → CALIBRATE → ROUTE → HUMAN_REVIEW → COMMIT → (RETRAIN →
PROMOTE, on cadence) → EVALUATE
"""

from __future__ import annotations

# Importing the stage modules registers them under the names the steps look up.
import conceptengine.model.preprocess
import conceptengine.model.propose_masks
import conceptengine.ontology.np_proposal
import conceptengine.verifiers.stage  # noqa: F401
from conceptengine.engine.steps import StepResult
from conceptengine.round.ai_verify import ai_verify
from conceptengine.round.calibrate import calibrate_round
from conceptengine.round.commit import commit_round
from conceptengine.round.context import RunContext
from conceptengine.round.evaluate import evaluate_round
from conceptengine.round.human_review import human_review
from conceptengine.round.propose_masks import propose_masks
from conceptengine.round.propose_nps import propose_nps
from conceptengine.round.registry import promoted_at_start_of, write_registry_view
from conceptengine.round.retrain_sam3 import has_training_data, promote, retrain, retrain_due
from conceptengine.round.retrain_verifiers import retrain_verifiers_step, verifier_retrain_due
from conceptengine.round.route import route

SUMMARY_KEYS = (
    "thresholds",
    "calibration_items",
    "auto_accepted",
    "auto_rejected",
    "to_human",
    "audited",
    "human_share",
    "human_tasks",
    "human_seconds",
    "committed_pairs",
    "committed_negative",
    "committed_masks",
    "model_version",
    "promoted",
    "verifiers_promoted",
    "candidate_cgF1",
    "gold_cgF1",
    "gold_IL_MCC",
    "gold_pmF1",
    "reported_cgF1",
    "reported_IL_MCC",
    "reported_pmF1",
    "domain_cgF1",
    "domain_IL_MCC",
    "domain_pmF1",
    "seen_cgF1",
    "seen_IL_MCC",
    "seen_pmF1",
    "precision",
    "pair_precision",
    "recall",
    "negative_precision",
)


def run_round(ctx: RunContext, r: int, media: StepResult, gold: StepResult) -> dict:
    """Runs (or resumes) round r and returns its summary row."""
    version = promoted_at_start_of(ctx, r)
    pairs = propose_nps(ctx, r, media)
    proposals = propose_masks(ctx, r, pairs, version)
    verified = ai_verify(ctx, r, proposals)
    calibrated = calibrate_round(ctx, r, verified)
    routed = route(ctx, r, verified, calibrated)
    review = human_review(ctx, r, routed)
    committed = commit_round(ctx, r, routed, review)
    steps = [pairs, proposals, calibrated, routed, review, committed]
    if retrain_due(ctx, r) and has_training_data(ctx, r):
        trained = retrain(ctx, r, version, committed)
        steps.append(promote(ctx, r, version, trained, gold))
    if verifier_retrain_due(ctx, r):
        steps.append(retrain_verifiers_step(ctx, r, committed))
    steps.append(evaluate_round(ctx, r, gold, committed, promoted_at_start_of(ctx, r + 1)))
    write_registry_view(ctx, r)
    return summarize(r, steps)


def steps_per_round(ctx: RunContext, r: int) -> int:
    return 8 + (2 if retrain_due(ctx, r) else 0) + (1 if verifier_retrain_due(ctx, r) else 0)


def summarize(r: int, steps: list[StepResult]) -> dict:
    pairs, proposals = steps[0], steps[1]
    origin = pairs["pairs"]["origin"].to_pylist()
    negative = sum(o in ("negative", "hard_negative") for o in origin)
    summary = {
        "round": r,
        "pairs_positive": len(origin) - negative,
        "pairs_negative": negative,
        "masks_proposed": sum(len(m) for m in proposals["proposals"]["masks"].to_pylist()),
        "errors": proposals.manifest.get("extra", {}).get("errors", 0),
        # The round's retrained candidate: its gold cgF1 and whether it was promoted (the promote step
        # fills both); null in a round without a retrain.
        "candidate_cgF1": None,
        "promoted": None,
    }
    for step in steps:
        extra = step.manifest.get("extra", {})
        summary |= {k: extra[k] for k in SUMMARY_KEYS if k in extra}
    return summary
