"""Verifier fine-tuning under Ray Train's `TorchTrainer`, and the YAML entry point behind
`conceptengine train verifier CONFIG`.

The same design as SAM 3's (model/train_ray.py): workers and GPUs come from the config; `num_workers: 0`
runs the training function in this very process (Ray Train's local mode), which tests, the demo script and
CPU-only in-loop retraining use. Checkpoints live in the config's `output_dir`, written by rank 0, so a
re-run resumes from them whatever launched it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from conceptengine.config import ConfigError, _format_validation_error, _set_dotted, parse_override
from conceptengine.verifiers.train import METRICS_FILE, TrainVerifierConfig, run_training


def _train_loop_per_worker(config: dict[str, Any]) -> str:
    import ray.train

    cfg = TrainVerifierConfig.model_validate(config)
    ctx = ray.train.get_context()

    def report(metrics: dict) -> None:
        ray.train.report(metrics)

    return run_training(cfg, rank=ctx.get_world_rank(), world_size=ctx.get_world_size(), report=report)


def train_verifier_ray(cfg: TrainVerifierConfig) -> str:
    """Run the fine-tuning loop with `TorchTrainer`; returns the output directory (a save_pretrained dir)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config=cfg.model_dump(mode="json"),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu),
        run_config=RunConfig(
            name=f"train-verifier-{cfg.task}", storage_path=str(Path(cfg.output_dir).resolve() / "ray")
        ),
    )
    trainer.fit()
    return cfg.output_dir


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainVerifierConfig:
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
        return TrainVerifierConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, str(p))) from None


def train_verifier_from_yaml(path: str | Path, overrides: list[str] | None = None) -> tuple[str, dict]:
    """`conceptengine train verifier CONFIG [--set k=v ...]`: load, validate, train under Ray Train.

    Returns the output directory and its hold-out metrics (also in OUTPUT/metrics.json)."""
    out = train_verifier_ray(load_train_config(path, overrides))
    return out, json.loads((Path(out) / METRICS_FILE).read_text())
