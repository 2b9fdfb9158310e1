"""RETRAIN and PROMOTE: fine-tune SAM 3 on everything committed so far, keep it only if gold cgF1 improves.

The candidate trained after round r lives in RUN/models/sam3/vRRRR (a deterministic name, so a crash
mid-training resumes from the trainer's own checkpoints there). Promotion is decided on the gold split
only, never on the data the candidate was trained on.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from conceptengine.engine.round_steps import Step
from conceptengine.engine.steps import StepResult, run_step
from conceptengine.engine.store import StepRef
from conceptengine.round.commit import committed_shards
from conceptengine.round.context import RunContext, RunInputs, resolve
from conceptengine.round.gold_eval import gold_metrics
from conceptengine.round.registry import ModelVersion, candidate_dir, candidate_rel
from conceptengine.training.loop import SUMMARY_FILE, TRAIN_LOG
from conceptengine.training.sam3 import TrainSam3Config
from conceptengine.training.sam3_ray import train_sam3_ray

log = logging.getLogger(__name__)


def retrain_due(ctx: RunContext, r: int) -> bool:
    cfg = ctx.cfg.retrain
    if not cfg.enabled:
        return False
    if cfg.every_rounds is not None and r % cfg.every_rounds == 0:
        return True
    if cfg.min_new_pairs is not None:
        return _pairs_since_last_retrain(ctx, r) >= cfg.min_new_pairs
    return False


def _pairs_since_last_retrain(ctx: RunContext, r: int) -> int:
    total = 0
    for past in range(r, 0, -1):
        if past < r and ctx.store.manifest(StepRef(past, Step.RETRAIN)):
            break
        commit = ctx.store.manifest(StepRef(past, Step.COMMIT)) or {}
        total += commit.get("extra", {}).get("committed_pairs", 0)
    return total


def replay_path(inputs: RunInputs) -> str | None:
    """`retrain.replay_annotations` resolved against the workspace; None when the fine-tune neither replays
    base data nor fits its operating point on it."""
    cfg = inputs.cfg.retrain
    if not cfg.replay_annotations or (cfg.replay_share <= 0 and not cfg.presence_fit_images):
        return None
    return resolve(inputs.workspace, cfg.replay_annotations)


def has_training_data(ctx: RunContext, r: int) -> bool:
    """Whether rounds 1..r committed anything to fine-tune on. A round nobody reviewed before its deadline
    commits nothing, and a fine-tune on replay data alone would teach the model nothing of this pool."""
    if committed_shards(ctx.store, r):
        return True
    log.warning("round %d: nothing committed so far, so SAM 3 is not retrained this round", r)
    return False


def retrain(ctx: RunContext, r: int, base: ModelVersion, committed: StepResult) -> StepResult:

    cfg = ctx.cfg.retrain
    ref = StepRef(r, Step.RETRAIN)
    out_dir = candidate_dir(ctx, r)
    shards = committed_shards(ctx.store, r)

    def compute():
        offsets = (
            {} if cfg.presence_fit_offsets is None else {"presence_fit_offsets": cfg.presence_fit_offsets}
        )
        train_cfg = TrainSam3Config(
            init_checkpoint=base.path,
            output_dir=out_dir,
            shards=shards,
            steps=cfg.steps,
            batch_size=cfg.batch_size,
            max_nps_per_image=cfg.max_nps_per_image,
            lr=cfg.lr,
            max_negative_share=cfg.max_negative_share,
            replay_annotations=replay_path(ctx.inputs),
            replay_share=cfg.replay_share,
            replay_spread=cfg.replay_spread,
            presence_fit_images=cfg.presence_fit_images,
            freeze_vision=cfg.freeze_vision,
            freeze_text=cfg.freeze_text,
            backbone_lr_scale=cfg.backbone_lr_scale,
            token_embedding_lr_scale=cfg.token_embedding_lr_scale,
            freeze_replay_tokens=cfg.freeze_replay_tokens,
            merge_alpha=cfg.merge_alpha,
            seed=ctx.cfg.seed + r,
            device=ctx.cfg.sam3.device,
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            **offsets,
        )
        if ctx.on_step is not None:  # the progress display follows the trainer's own log
            ctx.on_step(
                ref.rel, "training", {"train_log": str(Path(out_dir) / TRAIN_LOG), "steps": cfg.steps}
            )
        train_sam3_ray(train_cfg)
        candidate_path = ctx.store.publish_dir(out_dir, candidate_rel(r))
        summary_path = Path(out_dir) / SUMMARY_FILE
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        return {}, {
            "candidate": f"v{r:04d}",
            "candidate_path": candidate_path,
            "base": base.name,
            "shards": len(shards),
            "images": summary.get("images"),
            "replay_images": summary.get("replay_images", 0),
            "presence_fit": summary.get("presence_fit"),
        }

    return run_step(ctx, ref, [committed.fingerprint, base.key], [], compute)


def promote(ctx: RunContext, r: int, base: ModelVersion, trained: StepResult, gold: StepResult) -> StepResult:
    e = trained.manifest["extra"]
    candidate = ModelVersion(e["candidate"], e["candidate_path"], r, parent=base.name)

    def compute():
        before = gold_metrics(ctx, base, gold)
        after = gold_metrics(ctx, candidate, gold)
        promoted = after["gold_cgF1"] > before["gold_cgF1"]
        return {}, {
            "candidate": candidate.name,
            "candidate_path": candidate.path,
            "base": base.name,
            "candidate_cgF1": after["gold_cgF1"],
            "base_cgF1": before["gold_cgF1"],
            "promoted": promoted,
        }

    return run_step(ctx, StepRef(r, Step.PROMOTE), [trained.fingerprint, gold.fingerprint], [], compute)
