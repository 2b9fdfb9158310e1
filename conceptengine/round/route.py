"""ROUTE: apply the thresholds the calibrate step wrote (or the fixed ones it copied) plus the audit draw:
each item is auto-accepted, auto-rejected or sent to humans."""

from __future__ import annotations

from conceptengine.engine.block_files import total_stats
from conceptengine.engine.round_steps import Step
from conceptengine.engine.runner import Link
from conceptengine.engine.steps import StepResult, run_block_step
from conceptengine.engine.store import StepRef
from conceptengine.round.calibrate import thresholds_of
from conceptengine.round.context import RunContext
from conceptengine.verifiers.route_stage import ROUTED, RouteStage
from conceptengine.verifiers.routing import human_share, route_counts


def route(ctx: RunContext, r: int, verified: StepResult, calibrated: StepResult) -> StepResult:
    cfg = ctx.cfg.routing
    params = {
        "thresholds": thresholds_of(calibrated),
        "audit_share": cfg.audit_share,
        "seed": ctx.cfg.seed,
        "ev_scope": cfg.ev_scope,
    }

    def stream(step_url: str):
        # Routing is per row: the workers route the verified blocks, write them and count the routes; the
        # driver adds up the counts.
        chain = [Link(RouteStage, ctx.cfg.verifier.stage, params)]
        sources = verified.urls("verified")
        files = ctx.runner.stream_chain(
            chain, sources, step_url, {"routed": None}, ROUTED, block_stats=route_counts
        )
        per_task = total_stats(files["routed"]) or route_counts(ROUTED.empty_table())  # a round with no pairs
        # Items are masks (MV) plus pairs (EV): the unit the paper's "share humans see" counts.
        keys = ("auto_accepted", "auto_rejected", "to_human", "audited")
        totals = {k: per_task["mv"][k] + per_task["ev"][k] for k in keys}
        return files, totals | {"human_share": human_share(per_task), "routing": per_task}

    return run_block_step(
        ctx,
        StepRef(r, Step.ROUTE),
        [verified.fingerprint, calibrated.fingerprint],
        stream,
        sort_by={"routed": "pair_id"},
    )
