"""The image pipeline: which steps a round runs, in what order. Composition only; logic lives in engine/.

PROPOSE_NPS → PROPOSE_MASKS → AI_VERIFY → ROUTE → HUMAN_REVIEW → COMMIT → EVALUATE
"""

from __future__ import annotations

# Importing the stage modules registers them under the names the steps look up.
import conceptengine.model.propose_masks  # noqa: F401
import conceptengine.ontology.np_proposal  # noqa: F401
import conceptengine.verifiers.stage  # noqa: F401
from conceptengine.engine.commit import commit_round
from conceptengine.engine.context import RunContext
from conceptengine.engine.evaluate import evaluate_round
from conceptengine.engine.human_review import human_review
from conceptengine.engine.round import ai_verify, propose_masks, propose_nps, route
from conceptengine.engine.steps import StepResult

SUMMARY_KEYS = (
    "auto_accepted",
    "auto_rejected",
    "to_human",
    "human_tasks",
    "human_seconds",
    "committed_pairs",
    "committed_negative",
    "committed_masks",
    "gold_cgF1",
    "gold_IL_MCC",
    "gold_pmF1",
    "precision",
    "recall",
    "negative_precision",
)


def run_round(ctx: RunContext, r: int, media: StepResult, gold: StepResult, model_version: str) -> dict:
    """Runs (or resumes) round r and returns its summary row."""
    pairs = propose_nps(ctx, r, media)
    proposals = propose_masks(ctx, r, pairs, model_version)
    verified = ai_verify(ctx, r, proposals)
    routed = route(ctx, r, verified)
    review = human_review(ctx, r, routed)
    committed = commit_round(ctx, r, routed, review)
    evaluation = evaluate_round(ctx, r, gold, committed, model_version)
    return summarize(r, [pairs, proposals, routed, review, committed, evaluation])


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
    }
    for step in steps:
        extra = step.manifest.get("extra", {})
        summary |= {k: extra[k] for k in SUMMARY_KEYS if k in extra}
    return summary
