"""AI_VERIFY: the MV and EV verifiers promoted so far score every healthy proposal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conceptengine.config import VerifierConfig
from conceptengine.engine.round_steps import Step
from conceptengine.engine.runner import Link
from conceptengine.engine.stage import get_stage
from conceptengine.engine.steps import BlockStep
from conceptengine.engine.store import StepRef
from conceptengine.engine.tables import HEALTHY, VERIFIED
from conceptengine.round.context import RunContext, resolve
from conceptengine.round.retrain_verifiers import verifiers_at_start_of
from conceptengine.verifiers.settings import VerificationSettings


def params_from_config(cfg: VerifierConfig, resolve: Callable[[str], str]) -> dict[str, Any]:
    """Stage params for a run's `verifier:` config section. `resolve` turns a config-relative
    checkpoint path into the path actors load; served model names (openai) are passed through."""
    if cfg.backend == "openai":
        model, ev_model = cfg.openai.model, cfg.openai.ev_model
    else:
        model = resolve(cfg.model)
        ev_model = resolve(cfg.ev_model) if cfg.ev_model else None
    settings = cfg.model_dump(include=set(VerificationSettings.model_fields))
    return settings | {"model_path": model, "ev_model_path": ev_model}


def round_verifiers(ctx: RunContext, r: int) -> list[str]:
    """What scores round r's items, per task (MV, EV): the checkpoints promoted so far, or a served verifier's
    model names. Known before the round runs, so calibration can match earlier rounds' items to it before any
    item of this round is scored."""
    cfg = ctx.cfg.verifier
    if cfg.backend == "openai":
        mv = cfg.openai.model or ""
        return [mv, cfg.openai.ev_model or mv]
    current = verifiers_at_start_of(ctx, r)  # promoted by earlier rounds' retrain_verifiers steps
    return [current["mv"], current["ev"]]


def ai_verify_step(ctx: RunContext, r: int) -> BlockStep:
    """Maps propose_masks' healthy proposals (pipelines/image.py streams the two)."""
    cfg = ctx.cfg.verifier
    params = params_from_config(cfg, lambda path: resolve(ctx.workspace, path))
    verifiers = round_verifiers(ctx, r)
    if cfg.backend != "openai":
        params |= {"model_path": verifiers[0], "ev_model_path": verifiers[1]}
    return BlockStep(
        ref=StepRef(r, Step.AI_VERIFY),
        inputs=verifiers,
        chain=[Link(get_stage("ai_verify"), cfg.stage, params)],
        outputs={"verified": None},
        schema=VERIFIED,
        reads="proposals",
        source_filter=HEALTHY,
        sort_by={"verified": "pair_id"},
        extra=lambda files: {"verifiers": verifiers},
    )
