"""PROPOSE_MASKS: SAM 3 (the version promoted so far) segments every pair's noun phrase in its image."""

from __future__ import annotations

from conceptengine.engine.round_steps import Step
from conceptengine.engine.runner import Link
from conceptengine.engine.stage import get_stage
from conceptengine.engine.steps import StepResult, run_step
from conceptengine.engine.store import StepRef
from conceptengine.engine.tables import PROPOSALS, failed_rows
from conceptengine.model.proposal_settings import MaskProposalSettings
from conceptengine.round.context import RunContext
from conceptengine.round.registry import ModelVersion


def propose_masks(ctx: RunContext, r: int, pairs: StepResult, version: ModelVersion) -> StepResult:
    cfg = ctx.cfg.sam3
    params = cfg.model_dump(include=set(MaskProposalSettings.model_fields)) | {"model_path": version.path}

    # Decoding and resizing run on CPU actors ahead of the (GPU) SAM 3 actors, which only compute.
    chain = [
        Link(get_stage("decode_images"), cfg.decode_stage, {"model_path": version.path}),
        Link(get_stage("propose_masks"), cfg.stage, params),
    ]

    def compute():
        # An image's NPs in one batch: its vision features are computed once (pair_id breaks ties).
        by_media = pairs["pairs"].sort_by([("media_id", "ascending"), ("pair_id", "ascending")])
        out = ctx.runner.run_chain(chain, by_media, "pair_id", PROPOSALS)
        return {"proposals": out, "quarantine": failed_rows(out)}, {"errors": failed_rows(out).num_rows}

    return run_step(
        ctx,
        StepRef(r, Step.PROPOSE_MASKS),
        [pairs.fingerprint, version.key, version.path],
        ["proposals", "quarantine"],
        compute,
    )
