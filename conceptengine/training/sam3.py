"""Fine-tune SAM 3 on the engine's data: config, the training loop, resumable checkpoints, the final save.

The loop is one function, `run_training`, used both in-process (`train_sam3`) and by every Ray Train worker
(`train_ray.py`); with more than one worker it averages gradients over `torch.distributed` itself, which
avoids DDP's unused-parameter bookkeeping (the geometry encoder never runs on text prompts). Checkpoints,
resume, the step and the log are the engine's shared ones (training/loop.py), as in the verifier trainer.

What makes a small DETR train on a CPU budget: aux losses on every decoder layer and dense semantic
supervision (`losses.py`), linear warm-up then cosine decay, gradient clipping, several images per step with
all their NPs sharing one backbone pass, and (for in-loop fine-tuning) a frozen vision backbone.
The output directory loads exactly like the input one: `save_pretrained` plus the processor/tokenizer files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from transformers import Sam3Model

from conceptengine.engine.checkpoints import local_checkpoint
from conceptengine.engine.ids import stable_seed
from conceptengine.model.losses import DetectorOutputs, LossWeights, Sam3Criterion, detector_outputs
from conceptengine.model.presence_bias import fit_presence_bias
from conceptengine.model.processing import load_sam3_inputs
from conceptengine.model.sam3_backend import Sam3Detector
from conceptengine.model.train_data import (
    ImageRecord,
    Sam3TrainDataset,
    StepBatchSampler,
    TrainBatch,
    collate,
    read_shards,
    records_from_annotations,
)
from conceptengine.model.weight_merge import interpolate_towards
from conceptengine.training import loop

# CHECKPOINTS, STATE_FILE and checkpoint_dirs stay importable from here, where they were first defined.
from conceptengine.training.loop import (  # noqa: F401
    CHECKPOINTS,
    STATE_FILE,
    checkpoint_dirs,
    param_groups,
    resolve_device,
)

log = logging.getLogger(__name__)
_WEIGHT_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "generation_config.json")
# The loss weights a checkpoint was trained with, saved beside its weights. Fine-tuning continues with them
# (plus the config's overrides): a different focal alpha / gamma re-balances the query scores, and the demo
# checkpoint fell from gold cgF1 2.3 to 0.7 in 150 steps when retrained with the library defaults.
LOSS_WEIGHTS_FILE = "loss_weights.json"
# The text encoder's word-embedding table (Sam3Model's CLIP text tower).
TOKEN_EMBEDDING = "text_encoder.text_model.embeddings.token_embedding."


class TrainSam3Config(BaseModel):
    """Everything one fine-tuning run needs; unknown keys are rejected so a typo never goes unnoticed."""

    model_config = ConfigDict(extra="forbid")
    PATH_FIELDS: ClassVar[tuple[str, ...]] = (
        "init_checkpoint",
        "output_dir",
        "shards",
        "annotations",
        "replay_annotations",
    )

    init_checkpoint: str  # a save_pretrained directory: the promoted model, or the shipped demo checkpoint
    output_dir: str
    shards: list[str] = []  # WebDataset shard URLs (RUN/round-NNNN/commit/shards/part-*.tar) ...
    annotations: str | None = None  # ... and/or an ANNOTATIONS Parquet file or directory
    # Replay of base data: images of the data the init checkpoint was trained on (an ANNOTATIONS Parquet file
    # or directory, e.g. a slice of SA-Co/HQ), mixed in so they make up about `replay_share` of the images
    # the run samples. Fine-tuning on committed data alone, skewed toward what the rounds focused on (a new
    # concept family, a shifted domain), forgets the concepts the checkpoint knew.
    replay_annotations: str | None = None
    replay_share: float = Field(0.0, ge=0, lt=1)
    # Spread replay over the run's passes: the committed images repeat once per pass the run makes (as far as
    # the replay set has fresh images for each), each pass beside different replay images. Same replay
    # share, more distinct base images remembered (without it a short run replays one small draw again).
    replay_spread: bool = True
    # The operating point after training (model/presence_bias.py). A detection needs query x presence score
    # >= 0.5; a fine-tune retrains the presence head and drifts from the shift its init was calibrated with.
    # With presence_fit_images > 0, these shifts of the presence logit are scored on the first that many
    # images (by media_id) of replay_annotations, and the best is kept in the saved weights. Base data, not
    # the committed data, because it is what the checkpoint must keep answering; one scalar fitted on data
    # the model saw barely overfits. On the demo: seen concepts 10.8 -> 13.8 (init 13.2), shifted look equal.
    presence_fit_images: int = Field(0, ge=0)
    presence_fit_offsets: list[float] = Field([-0.5, 0.0, 0.5, 1.0], min_length=1)
    steps: int = Field(200, ge=0)
    batch_size: int = Field(4, ge=1)  # images per step and worker; all their sampled NPs go in together
    max_nps_per_image: int = Field(12, ge=1)
    # Cap an image's negatives at this share of its sampled pairs (None: all of them). Set it to the share
    # the init checkpoint was trained with when the data is far more negative (the engine's is ~90%).
    max_negative_share: float | None = Field(None, gt=0, lt=1)
    lr: float = Field(2e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float = Field(0.1, ge=0)  # DETR's max-norm; 0 disables
    freeze_vision: bool = False
    # The text tower (CLIP text encoder + projection) keeps its weights, as `freeze_vision` does for the
    # vision tower. Detector training washes word distinctions out of a small text tower: on the demo
    # SAM 3, "red shape" vs "blue shape" (pooled text features) went from cosine 0.17 after stage 1 to 0.89
    # within 500 detector steps and 0.99 after 22,000. Frozen from the start of detector training, its
    # presence head learned in 1,000 steps what it did not with the text trained along (README).
    freeze_text: bool = False
    # The vision backbone learns at lr x this, as DETR trains its pre-trained backbone at a tenth of the
    # transformer's rate: detector training at the full rate wipes what stage 1 taught the backbone (a linear
    # probe of its tokens read leaf / colour / pattern at 6% / 73% / 54% after stage 1, 15% / 21% / 37%
    # after 22,000 detector steps). The neck is not scaled: stage 1 never trains it.
    backbone_lr_scale: float = Field(1.0, gt=0, le=1)
    # The text encoder's token embeddings learn at lr x this (its layers and projection at lr). Words a
    # checkpoint never trained on (a new concept family's) keep their near-random embeddings through a short
    # fine-tune at the detector's rate; speeding up the whole text tower instead moved the trained words too
    # and cost the demo's seen concepts 3 points (README).
    token_embedding_lr_scale: float = Field(1.0, gt=0, le=100)
    # Keep the token embeddings of every word the replay data uses as the checkpoint has them: those are words
    # it knows, and a fine-tune that moves them blurs the concepts they name. Only new words learn.
    freeze_replay_tokens: bool = False  # with freeze_text, every token embedding is frozen anyway
    # Weight-space ensembling with the init before the operating point is fitted (model/weight_merge.py):
    # the output is init + merge_alpha * (fine-tune - init); 1.0 keeps the plain fine-tune.
    merge_alpha: float = Field(1.0, ge=0, le=1)
    hflip: bool = True
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)
    loader_workers: int = Field(0, ge=0)  # torch DataLoader processes per training worker
    num_workers: int = Field(0, ge=0)  # Ray Train workers; 0 runs the loop in this process (Ray local mode)
    use_gpu: bool = False
    # Overrides of LossWeights fields, e.g. {presence: 4.0}, on top of the init checkpoint's loss_weights.json
    # (the library defaults when it has none, e.g. facebook/sam3).
    loss_weights: dict[str, float | bool] = {}

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return loop.check_device(v)

    @field_validator("loss_weights")
    @classmethod
    def _weights(cls, v: dict) -> dict:
        known = set(LossWeights.__dataclass_fields__)
        bad = sorted(set(v) - known)
        if bad:
            raise ValueError(f"unknown loss weight(s) {bad}; valid: {sorted(known)}")
        return v

    @model_validator(mode="after")
    def _data_and_paths(self) -> TrainSam3Config:
        if not self.shards and not self.annotations:
            raise ValueError("no training data: set shards (WebDataset URLs) or annotations (a Parquet path)")
        if self.freeze_replay_tokens and not self.replay_annotations:
            raise ValueError(
                "freeze_replay_tokens is true but replay_annotations is not set: the words to keep are the "
                "replay data's; name it, or set freeze_replay_tokens to false"
            )
        if self.presence_fit_images and not self.replay_annotations:
            raise ValueError(
                f"presence_fit_images is {self.presence_fit_images} but replay_annotations is not set: the "
                "operating point is fitted on base data; name it, or set presence_fit_images to 0"
            )
        if self.replay_share > 0 and not self.replay_annotations:
            raise ValueError(
                f"replay_share is {self.replay_share} but replay_annotations is not set: name the base data "
                "to replay (an ANNOTATIONS Parquet path), or set replay_share to 0"
            )
        if Path(self.init_checkpoint).resolve() == Path(self.output_dir).resolve():
            raise ValueError(
                "output_dir must differ from init_checkpoint (the init weights would be overwritten)"
            )
        return self


# -- helpers ---------------------------------------------------------------------------------------------
def lr_lambda(cfg: TrainSam3Config) -> Callable[[int], float]:
    """Linear warm-up from 1% then cosine decay to `min_lr_ratio`: DETR's attention is fragile early on."""
    return loop.warmup_cosine(cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio)


def _annotation_table(path: str, key: str) -> pa.Table:
    """An ANNOTATIONS Parquet file or directory, local or any fsspec URL; `key` names the config key."""
    if "://" in path:
        fs, inner = fsspec.core.url_to_fs(path)
        if not fs.exists(inner):
            raise FileNotFoundError(f"{key} path {path} does not exist (set {key} in the config)")
        return pq.read_table(inner, filesystem=fs)
    if not Path(path).exists():
        raise FileNotFoundError(f"{key} path {path} does not exist (set {key} in the config)")
    return pq.read_table(path)


def _read_annotations(path: str, key: str):
    return records_from_annotations(_annotation_table(path, key))


def fit_operating_point(model: Sam3Model, inputs, cfg: TrainSam3Config) -> dict:
    """Fit the presence-logit shift on the first `presence_fit_images` replay images; kept in `model`."""

    table = _annotation_table(cfg.replay_annotations, "replay_annotations")
    media = sorted(set(table["media_id"].to_pylist()))[: cfg.presence_fit_images]
    table = table.filter(pc.is_in(table["media_id"], pa.array(media)))
    device = str(next(model.parameters()).device)
    fit = fit_presence_bias(
        Sam3Detector(model, inputs, "candidate", device), table, tuple(cfg.presence_fit_offsets)
    )
    log.info("operating point: presence shift %+.2f (cgF1 by shift %s)", fit["offset"], fit["cgF1"])
    return {**fit, "images": len(media)}


def replay_records(replay: list[ImageRecord], n_committed: int, share: float, seed: int) -> list[ImageRecord]:
    """round(n * share / (1 - share)) replay images for n committed ones, so replay is about `share` of the
    images a run samples (the sampler visits every record once per epoch).

    Drawn without repetition from a generator seeded by `seed` (then sorted, so the list is a pure function
    of its inputs and a resumed run sees the same batches); each image repeats only when the replay set has
    fewer than that: every whole multiple of it, then a draw for the rest.
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"replay_share must be in [0, 1); got {share}")
    replay = [r for r in replay if r.pairs]
    want = round(n_committed * share / (1.0 - share))
    if want == 0:
        return []
    if not replay:
        raise ValueError("replay_annotations holds no exhaustive image-NP pairs to replay")
    rng = np.random.default_rng(stable_seed(seed, "replay"))
    whole, rest = divmod(want, len(replay))
    picked = sorted(rng.choice(len(replay), rest, replace=False).tolist())
    return [r for _ in range(whole) for r in replay] + [replay[i] for i in picked]


def replay_token_ids(path: str, tokenizer) -> list[int]:
    """The token ids of every noun phrase in the replay annotations (special tokens included)."""
    phrases = sorted(set(_annotation_table(path, "replay_annotations")["noun_phrase"].to_pylist()))
    return sorted({i for ids in tokenizer(phrases)["input_ids"] for i in ids})


def freeze_token_rows(model: Sam3Model, token_ids: list[int]) -> None:
    """Zero the gradient of these rows of the text encoder's token embedding table. Adam's moments for them
    stay 0, so only weight decay touches them (lr x weight_decay per step); the other rows train as before."""
    table = model.text_encoder.get_input_embeddings().weight
    keep = torch.ones(table.shape[0], 1, device=table.device)
    keep[token_ids] = 0.0
    table.register_hook(lambda grad: grad * keep)
    log.info(
        "token embeddings: %d of %d rows (the replay data's words) kept as trained", len(token_ids), len(keep)
    )


def replay_passes(cfg: TrainSam3Config, n_records: int, n_committed: int, n_base: int) -> int:
    """How many times the committed records repeat (see `replay_spread`): the passes the run makes over
    committed + one replay draw, capped by how many distinct draws the base set holds; 1 without spread."""
    want = round(n_committed * cfg.replay_share / (1.0 - cfg.replay_share))
    if not cfg.replay_spread or want == 0 or n_records == 0:
        return 1
    run_passes = math.ceil(cfg.steps * cfg.batch_size / (n_records + want))
    return max(1, min(run_passes, n_base // want))


def load_training_records(cfg: TrainSam3Config) -> tuple[list[ImageRecord], int]:
    """The committed records (shards, annotations), then the replay ones; returns (records, n_replay)."""
    records = []
    if cfg.shards:
        records += read_shards(cfg.shards)
    if cfg.annotations:
        records += _read_annotations(cfg.annotations, "annotations")
    replay: list[ImageRecord] = []
    if cfg.replay_annotations and cfg.replay_share > 0:
        base = _read_annotations(cfg.replay_annotations, "replay_annotations")
        n_committed = sum(1 for r in records if r.pairs)
        passes = replay_passes(cfg, len(records), n_committed, sum(1 for r in base if r.pairs))
        records = records * passes
        replay = replay_records(base, n_committed * passes, cfg.replay_share, cfg.seed)
        log.info(
            "replaying %d base images beside %d committed ones (x%d passes)", len(replay), n_committed, passes
        )
    return records + replay, len(replay)


def model_mask_size(model: Sam3Model) -> int:
    """Side of `pred_masks`: the finest FPN level (4x the ViT grid)."""
    return int(model.config.vision_config.backbone_feature_sizes[0][0])


def save_checkpoint(output_dir: str, step: int, model, optimizer, scheduler, keep: int) -> Path:
    """The full model state (every weight may train), atomically; see `loop.save_checkpoint`."""
    return loop.save_checkpoint(output_dir, step, {"model": model.state_dict()}, optimizer, scheduler, keep)


def effective_loss_weights(cfg: TrainSam3Config) -> LossWeights:
    """The init checkpoint's training loss weights (if it recorded them), then the config's overrides."""
    inherited = {}
    path = Path(cfg.init_checkpoint) / LOSS_WEIGHTS_FILE
    if path.is_file():
        inherited = json.loads(path.read_text())
        unknown = sorted(set(inherited) - set(LossWeights.__dataclass_fields__))
        if unknown:
            raise ValueError(f"{path}: unknown loss weight(s) {unknown}; fix or delete the file")
    return LossWeights(**{**inherited, **cfg.loss_weights})


def save_final(model: Sam3Model, cfg: TrainSam3Config, summary: dict) -> None:
    """`save_pretrained` + every processor/tokenizer file of the init checkpoint, so the output loads with
    `Sam3Detector.from_pretrained` / `Sam3Processor.from_pretrained` exactly like the input."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    loop.finish_output(
        out, cfg.init_checkpoint, summary, lambda name: name in _WEIGHT_FILES or name.endswith(".safetensors")
    )
    weights = dataclasses.asdict(effective_loss_weights(cfg))
    (out / LOSS_WEIGHTS_FILE).write_text(json.dumps(weights, indent=2, sort_keys=True) + "\n")


def expand_vision(vision, counts: list[int]):
    """Repeat each image's backbone features once per NP of that image (gradients flow back to one copy)."""
    idx = torch.repeat_interleave(
        torch.arange(len(counts), device=vision.fpn_hidden_states[0].device),
        torch.tensor(counts, device=vision.fpn_hidden_states[0].device),
    )
    return type(vision)(
        last_hidden_state=vision.last_hidden_state[idx],
        fpn_hidden_states=tuple(x[idx] for x in vision.fpn_hidden_states),
        fpn_position_encoding=tuple(x[idx] for x in vision.fpn_position_encoding),
    )


def forward_batch(
    model: Sam3Model, batch: TrainBatch, device: torch.device, freeze_vision: bool, one_to_many: bool = False
) -> DetectorOutputs:
    pixels = batch.pixel_values.to(device)
    if freeze_vision:
        with torch.no_grad():
            vision = model.get_vision_features(pixel_values=pixels)
    else:
        vision = model.get_vision_features(pixel_values=pixels)
    return detector_outputs(
        model,
        batch.input_ids.to(device),
        batch.attention_mask.to(device),
        vision_embeds=expand_vision(vision, batch.nps_per_image),
        one_to_many=one_to_many,
    )


# -- the loop --------------------------------------------------------------------------------------------
def run_training(
    cfg: TrainSam3Config,
    rank: int = 0,
    world_size: int = 1,
    report: Callable[[dict], None] | None = None,
) -> str:
    """Train (resuming from the newest checkpoint in `output_dir`), save the final model; returns output_dir."""
    cfg = cfg.model_copy(update={"init_checkpoint": local_checkpoint(cfg.init_checkpoint)})
    loop.require_init_checkpoint(cfg.init_checkpoint, "SAM 3")
    device = resolve_device(cfg)
    loop.reproducible_on(device)
    model = Sam3Model.from_pretrained(cfg.init_checkpoint).to(device)
    model.train()
    if cfg.freeze_vision:
        model.vision_encoder.requires_grad_(False)
        model.vision_encoder.eval()
    if cfg.freeze_text:
        model.text_encoder.requires_grad_(False)
        model.text_encoder.eval()
        model.text_projection.requires_grad_(False)
    inputs = load_sam3_inputs(cfg.init_checkpoint)
    if cfg.freeze_replay_tokens and not cfg.freeze_text:
        freeze_token_rows(model, replay_token_ids(cfg.replay_annotations, inputs.tokenizer))
    records, n_replay = load_training_records(cfg)
    dataset = Sam3TrainDataset(
        records,
        inputs,
        model_mask_size(model),
        max_nps_per_image=cfg.max_nps_per_image,
        seed=cfg.seed,
        hflip=cfg.hflip,
        max_negative_share=cfg.max_negative_share,
    )
    criterion = Sam3Criterion(effective_loss_weights(cfg))
    lr_scale = {
        "vision_encoder.backbone.": cfg.backbone_lr_scale,
        TOKEN_EMBEDDING: cfg.token_embedding_lr_scale,
    }
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay, cfg.lr, lr_scale), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    start = loop.resume(
        cfg.output_dir,
        device,
        optimizer,
        scheduler,
        lambda state, _: model.load_state_dict(state["model"]),
        rank,
    )
    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, start, cfg.steps, rank, world_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.loader_workers
    )
    train_log = loop.TrainLog(cfg.output_dir, cfg.steps, cfg.log_every, rank, report)
    step = start
    last: dict[str, float] = {}
    for batch in loader:
        if batch is None:
            log.warning("step %d: no readable image in the batch; skipped", step)
        else:
            # Dropout draws from a per-step seed: a resumed run repeats the uninterrupted run exactly.
            torch.manual_seed(stable_seed(cfg.seed, "step", str(step), str(rank)))
            terms = criterion(
                forward_batch(model, batch, device, cfg.freeze_vision, criterion.w.o2m > 0),
                batch.targets.to(device),
            )
            loop.optimizer_step(
                terms["loss"], model, model.parameters(), optimizer, cfg.grad_clip, world_size
            )
            last = {k: float(v.detach()) for k, v in terms.items() if "_aux" not in k}
        scheduler.step()
        step += 1
        if train_log.after_step(step, scheduler.get_last_lr()[0], last) is not None and rank == 0:
            log.info("step %d loss %.4f", step, last.get("loss", float("nan")))
        if rank == 0 and loop.due(step, cfg.checkpoint_every, cfg.steps):
            save_checkpoint(cfg.output_dir, step, model, optimizer, scheduler, cfg.keep_checkpoints)
    if rank == 0:
        if cfg.merge_alpha < 1.0:
            init_state = Sam3Model.from_pretrained(cfg.init_checkpoint).state_dict()
            interpolate_towards(model, init_state, cfg.merge_alpha)
        fitted = fit_operating_point(model, inputs, cfg) if cfg.presence_fit_images else None
        save_final(
            model,
            cfg,
            {
                "steps": cfg.steps,
                "presence_fit": fitted,
                "merge_alpha": cfg.merge_alpha,
                "resumed_from": start,
                "init_checkpoint": cfg.init_checkpoint,
                "images": len(dataset),  # one pass: with spread replay, committed images repeat
                "replay_images": n_replay,
                "last": last,
                "config": cfg.model_dump(mode="json"),
            },
        )
    return cfg.output_dir


def train_sam3(cfg: TrainSam3Config) -> str:
    """Fine-tune in this process (no Ray); see `train_ray.train_sam3_ray` for Ray Train."""
    return run_training(cfg)
