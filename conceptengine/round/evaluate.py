"""EVALUATE: how good is the model (gold cgF1) and how good is what we committed (vs. ground truth).

The second needs ground truth, which only the rendered domain has: on real media it is skipped, and
the audits of the calibrate/route steps (human verdicts on a random share of automatic decisions)
take its place.
"""

from __future__ import annotations

import pyarrow as pa

from conceptengine.engine.round_steps import Step
from conceptengine.engine.steps import StepResult, run_step
from conceptengine.engine.store import StepRef
from conceptengine.review.matching import match
from conceptengine.round.context import RunContext
from conceptengine.round.gold_eval import gold_metrics
from conceptengine.round.registry import ModelVersion

MATCH_IOU = 0.5


def committed_quality(annotations: pa.Table, oracle) -> dict:
    """How right is everything the round committed — automatic and human decisions alike — vs. the oracle.

    precision / recall: committed masks vs. ground-truth instances. pair_precision: share of committed
    pairs whose annotation is exactly right (every mask matches an instance and none is missing; for a
    negative, nothing is there) — the unit EV decides, and the only one that sees auto-accepted
    negatives, which carry no masks. negative_precision: the same, for negatives only.
    """
    tp = n_pred = n_gt = 0
    neg_ok = neg_total = exact = 0
    for row in annotations.to_pylist():
        gt = oracle.instances(row["media_id"], row["noun_phrase"])
        pred = [m["rle"] for m in row["masks"]]
        # The same one-to-one matching the simulated reviewers judge masks by.
        hits = len(match(pred, gt, row["height"], row["width"], MATCH_IOU))
        tp += hits
        n_pred += len(pred)
        n_gt += len(gt)
        exact += hits == len(pred) == len(gt)
        if row["is_negative"]:
            neg_total += 1
            neg_ok += not gt
    return {
        "precision": round(tp / n_pred, 4) if n_pred else 1.0,
        "recall": round(tp / n_gt, 4) if n_gt else 1.0,
        "pair_precision": round(exact / annotations.num_rows, 4) if annotations.num_rows else 1.0,
        "negative_precision": round(neg_ok / neg_total, 4) if neg_total else 1.0,
    }


def evaluate_round(
    ctx: RunContext, r: int, gold: StepResult, committed: StepResult | None, version: ModelVersion
) -> StepResult:
    """Gold metrics of `version` (the one promoted at the end of round r) and, with ground truth, the
    quality of what round r committed. Round 0 evaluates the starting checkpoint only."""

    def compute():
        extra = {"model_version": version.name} | gold_metrics(ctx, version, gold)
        truth = ctx.sources.ground_truth
        if committed is not None and truth is not None:
            extra |= committed_quality(committed["annotations"], truth)
        table = pa.Table.from_pylist([{"round": r, **extra}])
        return {"metrics": table}, extra

    inputs = [gold.fingerprint, committed.fingerprint if committed else "", version.key, version.path]
    return run_step(ctx, StepRef(r, Step.EVALUATE), inputs, ["metrics"], compute)
