"""The propose_masks stage's params: pydantic only, so the run config embeds `MaskProposalSettings` (its `sam3:`
section) without loading SAM 3."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MaskProposalSettings(BaseModel):
    """How SAM 3 proposes: the run config's `sam3:` section embeds these, so their defaults are defined here
    only."""

    model_config = ConfigDict(extra="forbid")

    device: str = "cpu"
    score_threshold: float = Field(0.5, ge=0, le=1)
    max_masks: int = Field(30, ge=1)


class ProposeMasksParams(MaskProposalSettings):
    model_path: str  # the SAM 3 checkpoint directory (sam3.model)
    dtype: str | None = None  # None: bfloat16 on cuda, float32 on cpu
    np_batch_size: int = Field(32, ge=1)
    text_cache_size: int = Field(4096, ge=1)
