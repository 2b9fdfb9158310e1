"""EVALUATE: how good is the model (gold cgF1) and how good is what we committed (vs. ground truth).

The second needs ground truth, which only the rendered domain has: on real media it is skipped and
the audit shares of a later issue take its place.
"""

from __future__ import annotations

import pyarrow as pa

from conceptengine.engine.context import RunContext
from conceptengine.engine.gold_eval import gold_metrics
from conceptengine.engine.registry import ModelVersion
from conceptengine.engine.steps import StepResult, run_step
from conceptengine.engine.store import StepRef
from conceptengine.review.matching import match

MATCH_IOU = 0.5


def committed_quality(annotations: pa.Table, oracle) -> dict:
    """Mask precision/recall of committed pairs against the oracle, and pair-level negative accuracy."""
    tp = n_pred = n_gt = 0
    neg_ok = neg_total = 0
    for row in annotations.to_pylist():
        gt = oracle.instances(row["media_id"], row["noun_phrase"])
        pred = [m["rle"] for m in row["masks"]]
        # The same one-to-one matching the simulated reviewers judge masks by.
        tp += len(match(pred, gt, row["height"], row["width"], MATCH_IOU))
        n_pred += len(pred)
        n_gt += len(gt)
        if row["is_negative"]:
            neg_total += 1
            neg_ok += not gt
    return {
        "precision": round(tp / n_pred, 4) if n_pred else 1.0,
        "recall": round(tp / n_gt, 4) if n_gt else 1.0,
        "negative_precision": round(neg_ok / neg_total, 4) if neg_total else 1.0,
    }


def evaluate_round(
    ctx: RunContext, r: int, gold: StepResult, committed: StepResult | None, version: ModelVersion
) -> StepResult:
    """Gold metrics of `version` (the one promoted at the end of round r) and, with ground truth, the
    quality of what round r committed. Round 0 evaluates the starting checkpoint only."""

    def compute():
        extra = {"model_version": version.name} | gold_metrics(ctx, version, gold)
        if committed is not None and ctx.has_oracle:
            from conceptengine.sim.oracle import Oracle

            extra |= committed_quality(committed["annotations"], Oracle(ctx.world_dir))
        table = pa.Table.from_pylist([{"round": r, **extra}])
        return {"metrics": table}, extra

    inputs = [gold.fingerprint, committed.fingerprint if committed else "", version.key, version.path]
    return run_step(ctx, StepRef(r, "evaluate"), inputs, ["metrics"], compute)
