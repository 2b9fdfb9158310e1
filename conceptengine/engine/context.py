"""Everything one run needs in one place: resolved config, the store, the runner and the queue."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from conceptengine.config import EngineConfig
from conceptengine.engine.model_refs import model_dir
from conceptengine.engine.runner import Runner
from conceptengine.engine.store import RunStore


class RunError(RuntimeError):
    """Something about the run's inputs is wrong; the message says what to fix."""


def resolve(base: Path, maybe_relative: str) -> str:
    """Relative paths in a config resolve against the config file's folder (the workspace)."""
    if "://" in maybe_relative or os.path.isabs(maybe_relative):
        return maybe_relative
    return str((base / maybe_relative).resolve())


def run_review_url(cfg: EngineConfig, store: RunStore) -> str:
    """The run's review queue: `review.url` (e.g. PostgreSQL for a team), else SQLite at RUN/review.db.
    One definition, so the engine and the review server always open the same queue."""
    if cfg.review.url:
        return cfg.review.url
    return f"sqlite:///{store.local_path('review.db')}"


@dataclass(frozen=True)
class RunInputs:
    """Where a run's inputs are, from its config and workspace alone: start_run checks them before it
    creates the run directory or starts Ray."""

    cfg: EngineConfig
    workspace: Path

    @property
    def world_dir(self) -> str:
        return resolve(self.workspace, self.cfg.media.world_dir)

    @property
    def sam3_path(self) -> str:
        return model_dir(self.workspace, self.cfg.sam3.model, "sam3.model")

    @property
    def verifier_path(self) -> str:
        return model_dir(self.workspace, self.cfg.verifier.model, "verifier.model")

    @property
    def ev_model_path(self) -> str | None:
        ev_model = self.cfg.verifier.ev_model
        return model_dir(self.workspace, ev_model, "verifier.ev_model") if ev_model else None

    @property
    def captioner_model_path(self) -> str | None:
        model = self.cfg.ontology.captioner_model
        return model_dir(self.workspace, model, "ontology.captioner_model") if model else None

    @property
    def ontology_path(self) -> str:
        if self.cfg.ontology.path:
            return resolve(self.workspace, self.cfg.ontology.path)
        if self.cfg.media.source == "sim":
            return str(Path(self.world_dir) / "ontology.yaml")
        raise RunError("ontology.path is required when media.source is 'files'")


@dataclass
class RunContext:
    cfg: EngineConfig
    store: RunStore
    runner: Runner
    workspace: Path
    # Called as on_step(step_rel, phase, info), phase "start", "training" or "done": drives progress displays.
    on_step: Callable[[str, str, dict], None] | None = None
    config_hash: str = field(init=False)
    inputs: RunInputs = field(init=False)

    def __post_init__(self) -> None:
        self.config_hash = self.cfg.config_hash()
        self.inputs = RunInputs(self.cfg, self.workspace)

    @property
    def world_dir(self) -> str:
        return self.inputs.world_dir

    @property
    def sam3_path(self) -> str:
        return self.inputs.sam3_path

    @property
    def verifier_path(self) -> str:
        return self.inputs.verifier_path

    @property
    def ev_model_path(self) -> str | None:
        return self.inputs.ev_model_path

    @property
    def ontology_path(self) -> str:
        return self.inputs.ontology_path

    @property
    def review_url(self) -> str:
        return run_review_url(self.cfg, self.store)

    @property
    def has_oracle(self) -> bool:
        return self.cfg.media.source == "sim"
