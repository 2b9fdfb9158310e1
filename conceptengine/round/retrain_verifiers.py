"""RETRAIN_VERIFIERS: fine-tune the MV / EV verifiers on the human verdicts so far, on a cadence.

The training itself is `verifiers.retrain.retrain_verifiers` (an MLLM with LoRA under Ray Train, a grounded
scorer with its own trainer; a hold-out split by image); this step decides when it runs, which checkpoints it starts from, and which candidates are
promoted: a task's candidate replaces the current verifier only if its hold-out NLL against the humans
is lower (a proper score, so calibration counts as well as accuracy). The promoted verifiers of round r
are read back from the manifests of earlier rounds, so a resumed run verifies with the same weights.
"""

from __future__ import annotations

from conceptengine.engine.round_steps import Step
from conceptengine.engine.steps import StepResult, run_step
from conceptengine.engine.store import StepRef
from conceptengine.round.context import RunContext
from conceptengine.training.verifier_retrain import VerifierRetrainConfig, retrain_verifiers

TASKS = ("mv", "ev")


def verifier_retrain_due(ctx: RunContext, r: int) -> bool:
    cfg = ctx.cfg.verifier_retrain
    if not cfg.enabled or ctx.cfg.verifier.backend == "openai":  # a served verifier is retrained by its owner
        return False
    if cfg.every_rounds is not None and r % cfg.every_rounds == 0:
        return True
    if cfg.min_new_verdicts is not None:
        return _verdicts_since_last_retrain(ctx, r) >= cfg.min_new_verdicts
    return False


def _verdicts_since_last_retrain(ctx: RunContext, r: int) -> int:
    total = 0
    for past in range(r, 0, -1):
        if past < r and ctx.store.manifest(StepRef(past, Step.RETRAIN_VERIFIERS)):
            break
        review = ctx.store.manifest(StepRef(past, Step.HUMAN_REVIEW)) or {}
        total += review.get("extra", {}).get("human_tasks", 0)
    return total


def verifiers_at_start_of(ctx: RunContext, r: int) -> dict[str, str]:
    """The checkpoint each task verifies with in round r: the config's, or the last one promoted before r."""
    current = {"mv": ctx.verifier_path}
    current["ev"] = ctx.ev_model_path or current["mv"]
    for past in range(1, r):
        manifest = ctx.store.manifest(StepRef(past, Step.RETRAIN_VERIFIERS)) or {}
        for task, result in manifest.get("extra", {}).get("verifiers", {}).items():
            if result["promoted"]:
                current[task] = result["candidate"]
    return current


def retrain_verifiers_step(ctx: RunContext, r: int, committed: StepResult) -> StepResult:

    cfg = ctx.cfg.verifier_retrain
    base = verifiers_at_start_of(ctx, r)  # what round r verified with (stable when the step is resumed)

    def compute():
        train = {
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "lora": cfg.lora,
            "view_size": ctx.cfg.verifier.view_size,
            "device": ctx.cfg.verifier.device,
            "num_workers": cfg.num_workers,
            "use_gpu": cfg.use_gpu,
            "warmup_steps": min(20, cfg.steps // 5),
        }
        retrain_cfg = VerifierRetrainConfig(
            mv_checkpoint=base["mv"],
            ev_checkpoint=base["ev"],
            min_examples=cfg.min_examples,
            tasks=cfg.tasks,
            seed=ctx.cfg.seed,
            train=train,
        )
        results = retrain_verifiers(ctx.store, r, retrain_cfg)
        verifiers = {
            task: {
                "candidate": res.path,
                "base": res.base,
                "examples": res.examples,
                "promoted": res.improved,
                "holdout_nll": res.metrics.get("nll"),
                "base_holdout_nll": res.base_metrics.get("nll"),
                "holdout_accuracy": res.metrics.get("accuracy"),
                "base_holdout_accuracy": res.base_metrics.get("accuracy"),
                "holdout_auroc": res.metrics.get("auroc_p_accept"),
                "base_holdout_auroc": res.base_metrics.get("auroc_p_accept"),
            }
            for task, res in results.items()
        }
        promoted = sorted(t for t, v in verifiers.items() if v["promoted"])
        return {}, {"verifiers": verifiers, "verifiers_promoted": promoted}

    return run_step(
        ctx, StepRef(r, Step.RETRAIN_VERIFIERS), [committed.fingerprint, base["mv"], base["ev"]], [], compute
    )
