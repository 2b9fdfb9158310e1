"""Verifier fine-tuning under Ray Train's `TorchTrainer`, and the YAML entry point behind
`conceptengine train verifier CONFIG`.

The same launcher as SAM 3's (training/launch.py): workers and GPUs come from the config;
`num_workers: 0` runs the training function in this very process (Ray Train's local mode), which tests, the
demo script and CPU-only in-loop retraining use. Checkpoints live in the config's `output_dir`, written by
rank 0, so a re-run resumes from them whatever launched it.
"""

from __future__ import annotations

import json
from pathlib import Path

from conceptengine.training.launch import fit_with_ray_train, load_yaml_config
from conceptengine.training.verifier import METRICS_FILE, TrainVerifierConfig, run_training


def train_verifier_ray(cfg: TrainVerifierConfig) -> str:
    """Run the fine-tuning loop with `TorchTrainer`; returns the output directory (a save_pretrained dir)."""
    return fit_with_ray_train(cfg, run_training, f"train-verifier-{cfg.task}")


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainVerifierConfig:
    """YAML + `a.b=c` overrides -> validated config; errors name the key to fix."""
    return load_yaml_config(path, overrides, TrainVerifierConfig)


def train_verifier_from_yaml(path: str | Path, overrides: list[str] | None = None) -> tuple[str, dict]:
    """`conceptengine train verifier CONFIG [--set k=v ...]`: load, validate, train under Ray Train.

    Returns the output directory and its hold-out metrics (also in OUTPUT/metrics.json)."""
    out = train_verifier_ray(load_train_config(path, overrides))
    return out, json.loads((Path(out) / METRICS_FILE).read_text())
