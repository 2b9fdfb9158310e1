"""Fine-tune an MV or EV verifier on answer choices: config, loop, checkpoints, save, hold-out report.

Supervision is the cross-entropy of the human's choice under the softmax the backend scores with: the
next-token logits of the task's choice letters at the assistant's first position. So what is trained is
exactly the probability vector routing thresholds — no generation, no other tokens.

`lora: true` trains peft LoRA adapters on the language model's attention projections (the usual recipe
for an MLLM fine-tuned on a few thousand verdicts) and saves the MERGED model with `save_pretrained`, plus
the adapter in `adapter/`, so `AutoModelForImageTextToText` and the engine's backend load the output
unchanged. `lora: false` trains every weight: needed for the demo's tiny model, whose random weights give
LoRA nothing to adapt. The loop is one function, used in-process and by every Ray Train worker
(`train_ray.py`), mirroring the SAM 3 trainer: per-step batches, per-step seeds, and the engine's shared
atomic checkpoints, exact resume, step and log (training/loop.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conceptengine.engine.checkpoints import local_checkpoint
from conceptengine.engine.ids import stable_seed
from conceptengine.model.train_data import StepBatchSampler
from conceptengine.training import loop

# CHECKPOINTS, STATE_FILE and checkpoint_dirs stay importable from here, where they were first defined.
from conceptengine.training.loop import (  # noqa: F401
    CHECKPOINTS,
    METRICS_FILE,
    STATE_FILE,
    checkpoint_dirs,
    param_groups,
    reproducible_on,
    resolve_device,
    warmup_cosine,
)
from conceptengine.verifiers.train_data import TASKS, examples_from_run, read_examples, split_examples
from conceptengine.verifiers.train_eval import evaluate_examples
from conceptengine.verifiers.train_inputs import Collator, ExampleDataset, choice_logits
from conceptengine.verifiers.transformers_backend import TransformersBackend

log = logging.getLogger(__name__)
ADAPTER_DIR = "adapter"
# Files of the init checkpoint that the trained output replaces rather than copies (besides the run's own
# records, loop.RUN_RECORDS, which are never copied).
_NOT_COPIED = ("config.json", "generation_config.json")
LM_ATTENTION = r".*language_model.*\.self_attn\.(q_proj|k_proj|v_proj|o_proj)"


class TrainVerifierConfig(BaseModel):
    """One MV or EV fine-tuning run; unknown keys are rejected so a typo never goes unnoticed."""

    model_config = ConfigDict(extra="forbid")
    PATH_FIELDS: ClassVar[tuple[str, ...]] = ("init_checkpoint", "output_dir", "examples", "run_dir")

    task: Literal["mv", "ev"]
    init_checkpoint: str  # an AutoModelForImageTextToText save_pretrained dir (the promoted verifier)
    output_dir: str
    # Where examples come from (any combination; at least one):
    examples: str | None = None  # an EXAMPLES Parquet file or folder (verifiers/train_data.py)
    run_dir: str | None = None  # a run: its human verdicts joined with the masks / pairs they judged
    up_to_round: int | None = Field(None, ge=1)  # ... only verdicts of rounds <= this
    holdout_share: float = Field(0.2, ge=0, lt=1)  # share of IMAGES held out for the report
    split_seed: int = 0
    view_size: int = Field(112, ge=8)  # must equal the ai_verify stage's verifier.view_size
    lora: bool = True
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: str = LM_ATTENTION  # regex over module names (full match), peft's target_modules
    steps: int = Field(200, ge=0)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0)  # 0 disables
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | bfloat16 | float16 | auto (the checkpoint's own)
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)
    eval_batch_size: int = Field(32, ge=1)
    max_eval_examples: int | None = Field(4000, ge=1)  # a fixed random subset of the hold-out, for speed
    num_workers: int = Field(0, ge=0)  # Ray Train workers; 0 runs the loop in this process
    use_gpu: bool = False

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return loop.check_device(v)

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16; got {v!r}")
        return v

    @model_validator(mode="after")
    def _data_and_paths(self) -> TrainVerifierConfig:
        if not (self.examples or self.run_dir):
            raise ValueError("no training data: set examples (a Parquet path) or run_dir (a run)")
        if Path(self.init_checkpoint).resolve() == Path(self.output_dir).resolve():
            raise ValueError(
                "output_dir must differ from init_checkpoint (the init weights would be overwritten)"
            )
        return self


# -- data ------------------------------------------------------------------------------------------------
def load_examples(cfg: TrainVerifierConfig) -> pa.Table:
    """Every example of the config's sources for its task."""
    tables = []
    if cfg.examples:
        tables.append(read_examples(cfg.examples, cfg.task))
    if cfg.run_dir:
        tables.append(examples_from_run(cfg.run_dir, cfg.up_to_round))
    table = pa.concat_tables([t.filter(pc.equal(t["task"], cfg.task)) for t in tables])
    if table.num_rows == 0:
        raise ValueError(f"no {cfg.task} examples in the configured sources (examples / run_dir)")
    return table


# -- helpers ---------------------------------------------------------------------------------------------
def add_lora(model: torch.nn.Module, cfg: TrainVerifierConfig) -> torch.nn.Module:
    """Wrap in peft LoRA; only the adapters train. Seeded, so a resumed run starts from the same adapters."""

    torch.manual_seed(stable_seed(cfg.seed, "lora-init"))
    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_targets,
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise ValueError(
            f"lora_targets {cfg.lora_targets!r} matches no module of {cfg.init_checkpoint}: {exc}"
        ) from None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(cfg: TrainVerifierConfig, step: int, model, optimizer, scheduler) -> Path:
    """Trainable weights only (the adapters under LoRA), atomically; see `loop.save_checkpoint`."""
    weights = {"trainable": trainable_state(model)}
    return loop.save_checkpoint(cfg.output_dir, step, weights, optimizer, scheduler, cfg.keep_checkpoints)


def resume(cfg: TrainVerifierConfig, model, optimizer, scheduler, device: torch.device) -> int:
    """The step to start at: the newest checkpoint's, its trainable weights loaded into `model`; else 0."""

    def load_trainable(state: dict, where: Path) -> None:
        result = model.load_state_dict(state["trainable"], strict=False)
        if result.unexpected_keys:
            raise ValueError(
                f"checkpoint {where} does not fit this model (was lora changed?): {result.unexpected_keys[:3]}"
            )

    return loop.resume(cfg.output_dir, device, optimizer, scheduler, load_trainable)


def save_final(model: torch.nn.Module, cfg: TrainVerifierConfig, summary: dict) -> None:
    """Merged weights + the init checkpoint's processor/tokenizer files: loads exactly like the input."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.lora:
        model.save_pretrained(out / ADAPTER_DIR)
        model = model.merge_and_unload()
    model.save_pretrained(out)
    loop.finish_output(
        out,
        cfg.init_checkpoint,
        summary,
        lambda name: name.endswith(".safetensors") or name.startswith("model.") or name in _NOT_COPIED,
    )


# -- the loop --------------------------------------------------------------------------------------------
def run_training(
    cfg: TrainVerifierConfig,
    rank: int = 0,
    world_size: int = 1,
    report: Callable[[dict], None] | None = None,
) -> str:
    """Train (resuming from output_dir's newest checkpoint), save, report on the hold-out; returns the dir."""
    cfg = cfg.model_copy(update={"init_checkpoint": local_checkpoint(cfg.init_checkpoint)})
    loop.require_init_checkpoint(cfg.init_checkpoint, "model")
    device = resolve_device(cfg)
    reproducible_on(device)
    train_t, holdout_t = split_examples(load_examples(cfg), cfg.holdout_share, cfg.split_seed)
    if train_t.num_rows == 0:
        raise ValueError(
            f"every {cfg.task} example fell in the hold-out split; lower holdout_share or add images"
        )
    backend = TransformersBackend(cfg.init_checkpoint, device=str(device), dtype=cfg.dtype)
    letter_ids = backend.token_ids(list(TASKS[cfg.task].letters))
    model = add_lora(backend.model, cfg) if cfg.lora else backend.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay, cfg.lr), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio)
    )
    start = resume(cfg, model, optimizer, scheduler, device)
    dataset = ExampleDataset(train_t, cfg.task, cfg.view_size)
    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, start, cfg.steps, rank, world_size)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=Collator(backend))
    train_log = loop.TrainLog(cfg.output_dir, cfg.steps, cfg.log_every, rank, report)
    step, last = start, {}
    for batch in loader:
        torch.manual_seed(stable_seed(cfg.seed, "step", str(step), str(rank)))  # dropout: exact resume
        logits = choice_logits(model, {k: v.to(device) for k, v in batch.inputs.items()}, letter_ids)
        labels = batch.labels.to(device)
        loss = F.cross_entropy(logits, labels)
        loop.optimizer_step(loss, model, params, optimizer, cfg.grad_clip, world_size)
        scheduler.step()
        step += 1
        last = {"loss": float(loss.detach()), "acc": float((logits.argmax(-1) == labels).float().mean())}
        if rank == 0 and loop.due(step, cfg.checkpoint_every, cfg.steps):
            save_checkpoint(cfg, step, model, optimizer, scheduler)
        if train_log.after_step(step, scheduler.get_last_lr()[0], last) is not None and rank == 0:
            log.info("%s step %d loss %.4f acc %.3f", cfg.task, step, last["loss"], last["acc"])
    if rank == 0:
        model.eval()
        summary = {
            "task": cfg.task,
            "steps": cfg.steps,
            "resumed_from": start,
            "init_checkpoint": cfg.init_checkpoint,
            "last": last,
            "config": cfg.model_dump(mode="json"),
        }
        save_final(model, cfg, summary)
        write_metrics(cfg, train_t, holdout_t)
    return cfg.output_dir


def write_metrics(cfg: TrainVerifierConfig, train_t: pa.Table, holdout_t: pa.Table) -> dict:
    """Hold-out agreement of the SAVED model, scored by the engine's backend; written to metrics.json."""
    holdout = evaluate_examples(
        cfg.output_dir, holdout_t, cfg.task, cfg.view_size, str(resolve_device(cfg)), cfg.eval_batch_size,
        cfg.max_eval_examples, cfg.split_seed,
    )  # fmt: skip
    metrics = {
        "task": cfg.task,
        "holdout": holdout,
        "train_examples": train_t.num_rows,
        "holdout_examples": holdout_t.num_rows,
        "train_images": len(set(train_t["media_id"].to_pylist())),
        "holdout_images": len(set(holdout_t["media_id"].to_pylist())),
        "steps": cfg.steps,
        "lora": cfg.lora,
    }
    (Path(cfg.output_dir) / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def train_verifier(cfg: TrainVerifierConfig) -> str:
    """Fine-tune in this process (no Ray); see `train_ray.train_verifier_ray` for Ray Train."""
    return run_training(cfg)
