"""PROPOSE_MASKS: SAM 3 (the version promoted so far) segments every pair's noun phrase in its image."""

from __future__ import annotations

from conceptengine.engine.round_steps import Step
from conceptengine.engine.runner import Link
from conceptengine.engine.stage import get_stage
from conceptengine.engine.steps import StepResult, run_block_step
from conceptengine.engine.store import StepRef
from conceptengine.engine.tables import FAILED, PROPOSALS
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

    def stream(step_url: str):
        # The workers read propose_nps' block files, where an image's NPs are next to each other, so a batch
        # computes an image's vision features once for all its NPs.
        outputs = {"proposals": None, "quarantine": FAILED}
        files = ctx.runner.stream_chain(chain, pairs.urls("pairs"), step_url, outputs, PROPOSALS)
        return files, {"errors": sum(f["rows"] for f in files["quarantine"])}

    return run_block_step(
        ctx,
        StepRef(r, Step.PROPOSE_MASKS),
        [pairs.fingerprint, version.key, version.path],
        stream,
        sort_by={"proposals": "pair_id", "quarantine": "pair_id"},
    )
