"""AI_VERIFY: the MV and EV verifiers promoted so far score every healthy proposal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conceptengine.config import VerifierConfig
from conceptengine.engine.round_steps import Step
from conceptengine.engine.runner import Link
from conceptengine.engine.stage import get_stage
from conceptengine.engine.steps import StepResult, run_block_step
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


def ai_verify(ctx: RunContext, r: int, proposals: StepResult) -> StepResult:
    cfg = ctx.cfg.verifier
    params = params_from_config(cfg, lambda path: resolve(ctx.workspace, path))
    checkpoints = []
    if cfg.backend != "openai":  # the verifiers promoted by earlier rounds' retrain_verifiers steps
        current = verifiers_at_start_of(ctx, r)
        params |= {"model_path": current["mv"], "ev_model_path": current["ev"]}
        checkpoints = [current["mv"], current["ev"]]

    def stream(step_url: str):
        chain = [Link(get_stage("ai_verify"), cfg.stage, params)]
        sources = proposals.urls("proposals")
        files = ctx.runner.stream_chain(chain, sources, step_url, {"verified": None}, VERIFIED, HEALTHY)
        return files, {"verifiers": checkpoints}

    return run_block_step(
        ctx,
        StepRef(r, Step.AI_VERIFY),
        [proposals.fingerprint, *checkpoints],
        stream,
        sort_by={"verified": "pair_id"},
    )
