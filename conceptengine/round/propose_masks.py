"""PROPOSE_MASKS: SAM 3 (the version promoted so far) segments every pair's noun phrase in its image."""

from __future__ import annotations

from conceptengine.engine.round_steps import Step
from conceptengine.engine.runner import Link
from conceptengine.engine.stage import get_stage
from conceptengine.engine.steps import BlockStep
from conceptengine.engine.store import StepRef
from conceptengine.engine.tables import FAILED, PROPOSALS
from conceptengine.model.proposal_settings import MaskProposalSettings
from conceptengine.round.context import RunContext
from conceptengine.round.registry import ModelVersion


def propose_masks_step(ctx: RunContext, r: int, version: ModelVersion) -> BlockStep:
    """Maps propose_nps' pairs (pipelines/image.py streams the two)."""
    cfg = ctx.cfg.sam3
    params = cfg.model_dump(include=set(MaskProposalSettings.model_fields)) | {"model_path": version.path}
    # Decoding and resizing run on CPU actors ahead of the (GPU) SAM 3 actors, which only compute. Its input
    # keeps propose_nps' order, where an image's NPs are next to each other, so a batch computes an image's
    # vision features once for all its NPs.
    chain = [
        Link(get_stage("decode_images"), cfg.decode_stage, {"model_path": version.path}),
        Link(get_stage("propose_masks"), cfg.stage, params),
    ]
    return BlockStep(
        ref=StepRef(r, Step.PROPOSE_MASKS),
        inputs=[version.key, version.path],
        chain=chain,
        outputs={"proposals": None, "quarantine": FAILED},
        schema=PROPOSALS,
        reads="pairs",
        sort_by={"proposals": "pair_id", "quarantine": "pair_id"},
        extra=lambda files: {"errors": sum(f["rows"] for f in files["quarantine"])},
    )
