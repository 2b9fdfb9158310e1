"""The image pipeline: which steps a round runs, in what order (engine/round_steps.py names them).
Composition only; each step's logic lives in round/.

CALIBRATE → PROPOSE_NPS → PROPOSE_MASKS → AI_VERIFY → ROUTE → HUMAN_REVIEW → COMMIT → (RETRAIN →
PROMOTE, on cadence) → EVALUATE
"""

from __future__ import annotations

# Importing the stage modules registers them under the names the steps look up.
import conceptengine.model.preprocess
import conceptengine.model.propose_masks
import conceptengine.ontology.np_proposal
import conceptengine.verifiers.stage  # noqa: F401
from conceptengine.engine.round_steps import (
    EVERY_ROUND_STEPS,
    MEASURED_FIELDS,
    SAM3_RETRAIN_STEPS,
    VERIFIER_RETRAIN_STEPS,
    RoundSummary,
)
from conceptengine.engine.steps import StepResult, run_block_steps
from conceptengine.round.ai_verify import ai_verify_step, round_verifiers
from conceptengine.round.calibrate import calibrate_round
from conceptengine.round.commit import commit_round
from conceptengine.round.context import RunContext
from conceptengine.round.evaluate import evaluate_round
from conceptengine.round.human_review import human_review
from conceptengine.round.propose_masks import propose_masks_step
from conceptengine.round.propose_nps import propose_nps_step
from conceptengine.round.registry import promoted_at_start_of, write_registry_view
from conceptengine.round.retrain_sam3 import has_training_data, promote, retrain, retrain_due
from conceptengine.round.retrain_verifiers import retrain_verifiers_step, verifier_retrain_due
from conceptengine.round.route import route_step


def run_round(ctx: RunContext, r: int, media: StepResult, gold: StepResult) -> RoundSummary:
    """Runs (or resumes) round r and returns its summary row."""
    version = promoted_at_start_of(ctx, r)
    # Thresholds come from earlier rounds' answers, so images -> pairs -> masks -> scores -> routes can be one
    # stream (as far as the stages fit the cluster side by side): SAM 3 segments a round's first pairs while
    # later images are still being given their NPs.
    calibrated = calibrate_round(ctx, r, round_verifiers(ctx, r))
    pairs, proposals, _, routed = run_block_steps(
        ctx,
        [
            propose_nps_step(ctx, r, media),
            propose_masks_step(ctx, r, version),
            ai_verify_step(ctx, r),
            route_step(ctx, r, calibrated),
        ],
    )
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
    """How many steps round r runs (for progress bars)."""
    n = len(EVERY_ROUND_STEPS) + (len(SAM3_RETRAIN_STEPS) if retrain_due(ctx, r) else 0)
    return n + (len(VERIFIER_RETRAIN_STEPS) if verifier_retrain_due(ctx, r) else 0)


def summarize(r: int, steps: list[StepResult]) -> RoundSummary:
    pairs, proposals = steps[0], steps[1]
    origin = pairs["pairs"]["origin"].to_pylist()
    negative = sum(o in ("negative", "hard_negative") for o in origin)
    summary: RoundSummary = {
        "round": r,
        "pairs_positive": len(origin) - negative,
        "pairs_negative": negative,
        "masks_proposed": _masks_proposed(proposals),
        "errors": proposals.manifest.get("extra", {}).get("errors", 0),
        # The round's retrained candidate: its gold cgF1 and whether it was promoted (the promote step
        # fills both); null in a round without a retrain.
        "candidate_cgF1": None,
        "promoted": None,
    }
    for step in steps:
        extra = step.manifest.get("extra", {})
        summary |= {k: extra[k] for k in MEASURED_FIELDS if k in extra}  # type: ignore[misc]
    return summary


def _masks_proposed(proposals: StepResult) -> int:
    """Counted by the workers that wrote the proposals (a run from before block steps: read them)."""
    lengths = proposals.manifest.get("extra", {}).get("list_lengths")
    if lengths:
        return lengths["proposals"]["masks"]
    return sum(len(m) for m in proposals["proposals"]["masks"].to_pylist())
