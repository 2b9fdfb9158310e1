"""ROUTE: apply the thresholds the calibrate step wrote (or the fixed ones it copied) plus the audit draw:
each item is auto-accepted, auto-rejected or sent to humans."""

from __future__ import annotations

from conceptengine.engine.round_steps import Step
from conceptengine.engine.steps import StepResult, run_step
from conceptengine.engine.store import StepRef
from conceptengine.round.calibrate import thresholds_of
from conceptengine.round.context import RunContext
from conceptengine.verifiers.routing import human_share, route_counts
from conceptengine.verifiers.routing import route as route_table


def route(ctx: RunContext, r: int, verified: StepResult, calibrated: StepResult) -> StepResult:
    def compute():
        cfg = ctx.cfg.routing
        routed = route_table(
            verified["verified"], thresholds_of(calibrated), cfg.audit_share, ctx.cfg.seed, cfg.ev_scope
        )
        per_task = route_counts(routed)
        # Items are masks (MV) plus pairs (EV): the unit the paper's "share humans see" counts.
        keys = ("auto_accepted", "auto_rejected", "to_human", "audited")
        totals = {k: per_task["mv"][k] + per_task["ev"][k] for k in keys}
        return {"routed": routed}, totals | {"human_share": human_share(per_task), "routing": per_task}

    return run_step(
        ctx, StepRef(r, Step.ROUTE), [verified.fingerprint, calibrated.fingerprint], ["routed"], compute
    )
