"""SAM 3 fine-tuning under Ray Train's `TorchTrainer`, and the YAML entry point behind
`conceptengine train sam3 CONFIG`.

Workers and GPUs come from the config (`ScalingConfig(num_workers, use_gpu)`). With `num_workers: 0`, Ray
Train 2.60 (Train V2) runs the training function in this very process ("local mode": no cluster, no
actors), which is what tests and CPU-only in-loop fine-tuning use; the training function is the same.
Checkpoints live in the config's `output_dir` (a shared filesystem for multi-node runs), written by rank 0,
so a re-run resumes from them whatever launched it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from conceptengine.config import ConfigError, _format_validation_error, _set_dotted, parse_override
from conceptengine.model.train import TrainSam3Config, run_training


def _train_loop_per_worker(config: dict[str, Any]) -> str:
    import ray.train

    cfg = TrainSam3Config.model_validate(config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()

    def report(metrics: dict) -> None:
        ray.train.report(metrics)

    return run_training(cfg, rank=rank, world_size=world, report=report)


def train_sam3_ray(cfg: TrainSam3Config) -> str:
    """Run the fine-tuning loop with `TorchTrainer`; returns the output directory (a save_pretrained dir)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    storage = Path(cfg.output_dir).resolve() / "ray"
    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config=cfg.model_dump(mode="json"),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu),
        run_config=RunConfig(name="train-sam3", storage_path=str(storage)),
    )
    trainer.fit()
    return cfg.output_dir


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainSam3Config:
    """YAML + `a.b=c` overrides -> validated config; errors name the key to fix."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"training config file not found: {p}")
    try:
        tree = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"training config {p} is not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"training config {p} must hold a mapping at the top level")
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(tree, key, value)
    try:
        return TrainSam3Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, str(p))) from None


def train_sam3_from_yaml(path: str | Path, overrides: list[str] | None = None) -> str:
    """`conceptengine train sam3 CONFIG [--set k=v ...]`: load, validate, train under Ray Train."""
    return train_sam3_ray(load_train_config(path, overrides))
