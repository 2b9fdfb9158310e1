"""Launching a training loop: its YAML config, and Ray Train's `TorchTrainer` around it.

Shared by every trainer (sam3_ray.py, verifier_ray.py). Workers and GPUs come from the config
(`ScalingConfig(num_workers, use_gpu)`). With `num_workers: 0`, Ray Train 2.60 (Train V2) runs the training
function in this very process ("local mode": no cluster, no actors), which tests and CPU-only in-loop
fine-tuning use; the function is the same. Checkpoints live in the config's `output_dir` (a shared
filesystem for multi-node runs), so a re-run resumes from them whatever launched it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import ray.train
from pydantic import BaseModel
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from conceptengine.config import load_yaml_model
from conceptengine.engine.checkpoints import is_remote

C = TypeVar("C", bound=BaseModel)


class LaunchConfig(Protocol):
    # Fields naming local files or folders (relative to where the command runs): Ray Train's workers run
    # elsewhere, so they get them absolute.
    PATH_FIELDS: ClassVar[tuple[str, ...]]
    output_dir: str
    num_workers: int  # Ray Train workers; 0 runs the loop in this process
    use_gpu: bool

    def model_dump(self, *, mode: str) -> dict[str, Any]: ...


class RunTraining(Protocol):
    """A trainer's loop: `run_training(cfg, rank, world_size, report)` -> the output directory."""

    def __call__(
        self, cfg: Any, rank: int = ..., world_size: int = ..., report: Callable[[dict], None] | None = ...
    ) -> str: ...


def load_yaml_config(path: str | Path, overrides: list[str] | None, config_cls: type[C]) -> C:
    """A trainer's YAML + `a.b=c` overrides -> a validated `config_cls` (parsed as run configs are)."""
    return load_yaml_model(path, overrides, config_cls, what="training config")


def _per_worker(config_cls: type[BaseModel], run_training: RunTraining, config: dict[str, Any]) -> str:
    """What each Ray Train worker runs: the trainer's own loop with this worker's rank and Ray's report."""

    ctx = ray.train.get_context()

    def report(metrics: dict) -> None:
        ray.train.report(metrics)

    cfg = config_cls.model_validate(config)
    return run_training(cfg, rank=ctx.get_world_rank(), world_size=ctx.get_world_size(), report=report)


def _absolute(path: str, made_by_the_run: bool = False) -> str:
    """A relative local path as this process resolves it; URLs, absolute paths and hub ids (names no local
    file has) as they are. The output folder may not exist yet."""
    local = Path(path)
    if is_remote(path) or local.is_absolute() or not (local.exists() or made_by_the_run):
        return path
    return str(local.resolve())


def _with_absolute_paths(cfg: LaunchConfig) -> dict[str, Any]:
    config = cfg.model_dump(mode="json")
    for field in cfg.PATH_FIELDS:
        value = config.get(field)
        if isinstance(value, str):
            config[field] = _absolute(value, made_by_the_run=field == "output_dir")
        elif isinstance(value, list):
            config[field] = [_absolute(v) for v in value]
    return config


def fit_with_ray_train(cfg: LaunchConfig, run_training: RunTraining, name: str) -> str:
    """Run `run_training` on `cfg.num_workers` Ray Train workers (0: in this process); returns output_dir.

    The config crosses to the workers as JSON and is validated again there, as its own class."""

    storage = Path(cfg.output_dir).resolve() / "ray"
    trainer = TorchTrainer(
        functools.partial(_per_worker, type(cfg), run_training),
        train_loop_config=_with_absolute_paths(cfg),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu),
        run_config=RunConfig(name=name, storage_path=str(storage)),
    )
    trainer.fit()
    return cfg.output_dir
