"""SAM 3 fine-tuning under Ray Train's `TorchTrainer`, and the YAML entry point behind
`conceptengine train sam3 CONFIG`.

Workers and GPUs come from the config (`ScalingConfig(num_workers, use_gpu)`); `num_workers: 0` runs the
training function in this very process (Ray Train's local mode), which tests and CPU-only in-loop
fine-tuning use. The launching itself is the engine's, shared with the verifiers (training/launch.py).
"""

from __future__ import annotations

from pathlib import Path

from conceptengine.training.launch import fit_with_ray_train, load_yaml_config
from conceptengine.training.sam3 import TrainSam3Config, run_training


def train_sam3_ray(cfg: TrainSam3Config) -> str:
    """Run the fine-tuning loop with `TorchTrainer`; returns the output directory (a save_pretrained dir)."""
    return fit_with_ray_train(cfg, run_training, "train-sam3")


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainSam3Config:
    """YAML + `a.b=c` overrides -> validated config; errors name the key to fix."""
    return load_yaml_config(path, overrides, TrainSam3Config)


def train_sam3_from_yaml(path: str | Path, overrides: list[str] | None = None) -> str:
    """`conceptengine train sam3 CONFIG [--set k=v ...]`: load, validate, train under Ray Train."""
    return train_sam3_ray(load_train_config(path, overrides))
