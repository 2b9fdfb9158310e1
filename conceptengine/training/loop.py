"""What every fine-tuning loop of the engine shares (SAM 3's, the verifiers'), whatever it trains.

One implementation of the parts that decide whether a run can be resumed exactly and used afterwards:
the checkpoint layout (OUTPUT/checkpoints/step-NNNNNNN/state.pt, written atomically), restoring the newest
one, the optimizer step with torch.distributed gradient averaging, the warm-up/cosine schedule, the
train_log.jsonl / Ray Train report cadence, and the final output folder that loads like the input.
Nothing here knows a model type: callers pass the weights to save and say how to load them back.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"
STATE_FILE = "state.pt"
TRAIN_LOG = "train_log.jsonl"
SUMMARY_FILE = "training.json"
METRICS_FILE = "metrics.json"  # an evaluation of the checkpoint, written beside it
# What a training run writes about itself. An output never inherits these from its init checkpoint, or a
# fine-tune would show its parent's training log and metrics as its own.
RUN_RECORDS = (TRAIN_LOG, SUMMARY_FILE, METRICS_FILE)


class DeviceConfig(Protocol):
    """The two fields of a training config that pick its device."""

    device: str  # auto | cpu | cuda | cuda:N
    use_gpu: bool


def check_device(value: str) -> str:
    """Validator body for a config's `device` field; names the valid spellings."""
    if value not in ("auto", "cpu", "cuda") and not value.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {value!r}")
    return value


def resolve_device(cfg: DeviceConfig) -> torch.device:
    """`auto` means CUDA only when the run asked for GPUs (use_gpu), so a CPU run never lands on one."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and cfg.use_gpu else "cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {cfg.device!r} requested but CUDA is not available; set device: cpu")
    return torch.device(cfg.device)


def reproducible_on(device: torch.device) -> None:
    """On CPU, torch's deterministic kernels: the same data and weights give the same bytes in every process.

    Without them two processes fine-tuning the demo SAM 3 on the same shards diverge from the fourth step
    (losses apart by 1e-7, then different candidates: gold cgF1 27.71 after round 3 of one demo run, 28.61
    of another); with them they agree step for step, at the same speed (40 steps: 26.5 s against 26.0 s).
    CUDA's deterministic mode needs CUBLAS_WORKSPACE_CONFIG set before CUDA starts and costs speed, so a GPU
    run opts in itself."""
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)


def require_init_checkpoint(path: str, what: str) -> None:
    """Fail before any data is read when the init checkpoint is not a save_pretrained folder."""
    if not Path(path, "config.json").is_file():
        raise FileNotFoundError(f"init_checkpoint {path} is not a {what} checkpoint (no config.json)")


def warmup_cosine(steps: int, warmup: int, min_ratio: float) -> Callable[[int], float]:
    """LR factor: linear warm-up from 1% (attention is fragile early on), then cosine decay to min_ratio."""

    def f(step: int) -> float:
        if warmup and step < warmup:
            return 0.01 + 0.99 * step / warmup
        t = min(max(step - warmup, 0) / max(steps - warmup, 1), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def param_groups(
    model: torch.nn.Module, weight_decay: float, lr: float, lr_scale: dict[str, float] | None = None
) -> list[dict]:
    """No weight decay on norms, biases and embeddings-as-vectors (the usual AdamW practice).

    `lr_scale` maps a parameter-name prefix (e.g. "vision_encoder.backbone.") to a multiplier of `lr` for
    the parameters under it; the first matching prefix wins. Empty groups are left out; the order (full
    rate first, decayed before not) keeps optimizer checkpoints of the unscaled groups loadable."""
    scales = {**(lr_scale or {}), "": 1.0}
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            scale = next(v for k, v in scales.items() if name.startswith(k))
            groups.setdefault((scale, p.ndim <= 1), []).append(p)
    return [
        {"params": ps, "lr": lr * scale, "weight_decay": 0.0 if no_decay else weight_decay}
        for (scale, no_decay), ps in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1]))
    ]


# -- checkpoints -----------------------------------------------------------------------------------------
def checkpoint_dirs(output_dir: str) -> list[Path]:
    """Complete checkpoints (those with a state file), oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    done = [
        d for d in root.iterdir() if d.is_dir() and d.name.startswith("step-") and (d / STATE_FILE).is_file()
    ]
    return sorted(done, key=lambda d: int(d.name.split("-")[1]))


def save_checkpoint(
    output_dir: str,
    step: int,
    weights: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    keep: int,
) -> Path:
    """Write to a temporary directory, then rename: a crash mid-write never leaves a checkpoint that looks
    done. `weights` holds the model part of the state under the caller's key(s); the `keep` newest stay."""
    root = Path(output_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final, tmp = root / f"step-{step:07d}", root / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    state = {
        "step": step,
        **weights,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }
    torch.save(state, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoint_dirs(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resume(
    output_dir: str,
    device: torch.device,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    load_weights: Callable[[dict[str, Any], Path], None],
    rank: int = 0,
) -> int:
    """Restore the newest checkpoint (weights through `load_weights(state, dir)`); the step to start at."""
    existing = checkpoint_dirs(output_dir)
    if not existing:
        return 0
    state = torch.load(existing[-1] / STATE_FILE, map_location=device, weights_only=False)
    load_weights(state, existing[-1])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if rank == 0:
        log.info("resuming from %s at step %d", existing[-1], state["step"])
    return int(state["step"])


# -- one step --------------------------------------------------------------------------------------------
def all_reduce_grads(model: torch.nn.Module, world_size: int) -> None:
    """Average gradients over workers ourselves instead of DDP: parameters a batch never reaches (the
    geometry encoder on text prompts) get zeros, so no unused-parameter bookkeeping is needed."""

    for p in model.parameters():
        if p.requires_grad:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= world_size


def optimizer_step(
    loss: torch.Tensor,
    model: torch.nn.Module,
    params: Iterable[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    grad_clip: float,
    world_size: int,
) -> None:
    """Backward, average over workers, clip `params` to `grad_clip` (0: no clipping), step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if world_size > 1:
        all_reduce_grads(model, world_size)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()


def due(step: int, every: int, last_step: int) -> bool:
    """Log / checkpoint cadence: every `every` steps and always at the last one."""
    return step % every == 0 or step == last_step


class TrainLog:
    """Every `log_every` steps: a line in OUTPUT/train_log.jsonl (rank 0) and a report to the caller.

    The report goes out on every rank because Ray Train's `report` is a barrier across workers.
    """

    def __init__(
        self,
        output_dir: str,
        steps: int,
        log_every: int,
        rank: int,
        report: Callable[[dict], None] | None,
    ) -> None:
        self.path = Path(output_dir) / TRAIN_LOG
        self.steps, self.log_every, self.rank, self.report = steps, log_every, rank, report
        if rank == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()

    def after_step(self, step: int, lr: float, metrics: dict[str, float]) -> dict | None:
        """The record written at this step, or None when the step is not due (nothing written)."""
        if not due(step, self.log_every, self.steps):
            return None
        rec = {"step": step, "lr": lr, "sec": round(time.perf_counter() - self.t0, 2), **metrics}
        if self.rank == 0:
            with self.path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
        if self.report is not None:
            self.report(rec)
        return rec


# -- the output ------------------------------------------------------------------------------------------
def finish_output(out: Path, init_checkpoint: str, summary: dict, replaced: Callable[[str], bool]) -> None:
    """Copy the init checkpoint's other files (processor, tokenizer, ...) next to the saved weights, so the
    output loads exactly like the input, and write the run's summary. `replaced(name)`: files not copied,
    besides RUN_RECORDS."""
    for f in Path(init_checkpoint).iterdir():
        if f.is_file() and f.name not in RUN_RECORDS and not replaced(f.name):
            shutil.copy2(f, out / f.name)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
