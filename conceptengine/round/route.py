"""ROUTE: apply the thresholds the calibrate step wrote (or the fixed ones it copied) plus the audit draw:
each item is auto-accepted, auto-rejected or sent to humans."""

from __future__ import annotations

from conceptengine.engine.block_files import total_stats
from conceptengine.engine.round_steps import Step
from conceptengine.engine.runner import Link
from conceptengine.engine.steps import BlockStep, StepResult
from conceptengine.engine.store import StepRef
from conceptengine.round.calibrate import thresholds_of
from conceptengine.round.context import RunContext
from conceptengine.verifiers.route_stage import ROUTED, RouteStage
from conceptengine.verifiers.routing import human_share, route_counts


def route_step(ctx: RunContext, r: int, calibrated: StepResult) -> BlockStep:
    """Maps ai_verify's scored pairs (pipelines/image.py streams the two): routing is per row, so the workers
    route the blocks, write them and count the routes; the driver adds up the counts."""
    cfg = ctx.cfg.routing
    params = {
        "thresholds": thresholds_of(calibrated),
        "audit_share": cfg.audit_share,
        "seed": ctx.cfg.seed,
        "ev_scope": cfg.ev_scope,
    }
    return BlockStep(
        ref=StepRef(r, Step.ROUTE),
        inputs=[calibrated.fingerprint],
        chain=[Link(RouteStage, ctx.cfg.verifier.stage, params)],
        outputs={"routed": None},
        schema=ROUTED,
        reads="verified",
        block_stats=route_counts,
        sort_by={"routed": "pair_id"},
        extra=_route_totals,
    )


def _route_totals(files: dict[str, list[dict]]) -> dict:
    per_task = total_stats(files["routed"]) or route_counts(ROUTED.empty_table())  # a round with no pairs
    # Items are masks (MV) plus pairs (EV): the unit the paper's "share humans see" counts.
    keys = ("auto_accepted", "auto_rejected", "to_human", "audited")
    totals = {k: per_task["mv"][k] + per_task["ev"][k] for k in keys}
    return totals | {"human_share": human_share(per_task), "routing": per_task}
