"""The model steps of a round: PROPOSE_NPS, PROPOSE_MASKS, AI_VERIFY, ROUTE (pipelines/ orders them;
CALIBRATE, which ROUTE reads its thresholds from, is engine/calibrate.py).

Each step is stored with a manifest, so `run --resume` restarts at the first step whose manifest is
missing, and a re-run of a finished round reads everything back instead of recomputing.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from conceptengine.engine.context import RunContext, resolve
from conceptengine.engine.registry import ModelVersion
from conceptengine.engine.runner import Link, run_stage
from conceptengine.engine.stage import get_stage
from conceptengine.engine.steps import StepResult, run_step
from conceptengine.engine.store import StepRef
from conceptengine.engine.tables import PAIRS, PROPOSALS

VERIFIED_EXTRA = [
    ("mv_probs", pa.list_(pa.list_(pa.float32()))),
    ("ev_probs", pa.list_(pa.float32())),
    ("verifier_version", pa.string()),
]
VERIFIED = pa.schema(list(PROPOSALS) + [pa.field(n, t) for n, t in VERIFIED_EXTRA])


def select_media(ctx: RunContext, media: pa.Table, round_index: int) -> pa.Table:
    """Round r takes the next `images_per_round` healthy train images, in media_id order."""
    ok = media.filter(pc.and_(pc.is_null(media["error"]), pc.equal(media["split"], "train")))
    ok = ok.sort_by([("media_id", "ascending")])
    n = ctx.cfg.rounds.images_per_round
    return ok.slice((round_index - 1) * n, n)


def _errors(table: pa.Table) -> pa.Table:
    return table.filter(pc.invert(pc.is_null(table["error"])))


def _healthy(table: pa.Table) -> pa.Table:
    return table.filter(pc.is_null(table["error"]))


def propose_nps(ctx: RunContext, r: int, media: StepResult) -> StepResult:
    chosen = select_media(ctx, media["media"], r)
    cfg = ctx.cfg.ontology
    params = {
        "ontology_path": ctx.ontology_path,
        "world_dir": ctx.world_dir if ctx.has_oracle and cfg.positives_from is None else None,
        "captions_path": resolve(ctx.workspace, cfg.captions_path) if cfg.positives_from == "file" else None,
        "captioner_model": ctx.inputs.captioner_model_path if cfg.positives_from == "model" else None,
        "captioner_device": cfg.captioner_device,
        "ontology_guesses": cfg.positives_from == "ontology",
        "captioner_recall": cfg.captioner_recall,
        "captioner_noise": cfg.captioner_noise,
        "negative_share": cfg.negative_share,
        "hard_negative_share": cfg.hard_negative_share,
        "max_nps_per_image": cfg.max_nps_per_image,
        "focus_concepts": cfg.focus_concepts,
        "focus_weight": cfg.focus_weight,
        "round": r,
        "seed": ctx.cfg.seed,
    }

    def compute():
        pairs = run_stage(ctx.runner, get_stage("propose_nps"), cfg.stage, params, chosen, "pair_id", PAIRS)
        return {"pairs": pairs}, {"images": chosen.num_rows}

    return run_step(ctx, StepRef(r, "propose_nps"), [media.fingerprint], ["pairs"], compute)


def propose_masks(ctx: RunContext, r: int, pairs: StepResult, version: ModelVersion) -> StepResult:
    cfg = ctx.cfg.sam3
    params = {
        "model_path": version.path,
        "score_threshold": cfg.score_threshold,
        "device": cfg.device,
        "max_masks": cfg.max_masks,
    }

    # Decoding and resizing run on CPU actors ahead of the (GPU) SAM 3 actors, which only compute.
    chain = [
        Link(get_stage("decode_images"), cfg.decode_stage, {"model_path": version.path}),
        Link(get_stage("propose_masks"), cfg.stage, params),
    ]

    def compute():
        # An image's NPs in one batch: its vision features are computed once (pair_id breaks ties).
        by_media = pairs["pairs"].sort_by([("media_id", "ascending"), ("pair_id", "ascending")])
        out = ctx.runner.run_chain(chain, by_media, "pair_id", PROPOSALS)
        return {"proposals": out, "quarantine": _errors(out)}, {"errors": _errors(out).num_rows}

    return run_step(
        ctx,
        StepRef(r, "propose_masks"),
        [pairs.fingerprint, version.key, version.path],
        ["proposals", "quarantine"],
        compute,
    )


def ai_verify(ctx: RunContext, r: int, proposals: StepResult) -> StepResult:
    from conceptengine.engine.verifier_retrain import verifiers_at_start_of
    from conceptengine.verifiers.stage import params_from_config

    cfg = ctx.cfg.verifier
    params = params_from_config(cfg, lambda path: resolve(ctx.workspace, path))
    checkpoints = []
    if cfg.backend != "openai":  # the verifiers promoted by earlier rounds' retrain_verifiers steps
        current = verifiers_at_start_of(ctx, r)
        params |= {"model_path": current["mv"], "ev_model_path": current["ev"]}
        checkpoints = [current["mv"], current["ev"]]

    def compute():
        healthy = _healthy(proposals["proposals"])
        out = run_stage(ctx.runner, get_stage("ai_verify"), cfg.stage, params, healthy, "pair_id", VERIFIED)
        return {"verified": out}, {"verifiers": checkpoints}

    return run_step(
        ctx, StepRef(r, "ai_verify"), [proposals.fingerprint, *checkpoints], ["verified"], compute
    )


def route(ctx: RunContext, r: int, verified: StepResult, calibrated: StepResult) -> StepResult:
    """Apply the thresholds the calibrate step wrote (or the fixed ones it copied) plus the audit draw."""
    from conceptengine.engine.calibrate import thresholds_of
    from conceptengine.verifiers.routing import human_share, route_counts
    from conceptengine.verifiers.routing import route as route_table

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
        ctx, StepRef(r, "route"), [verified.fingerprint, calibrated.fingerprint], ["routed"], compute
    )
