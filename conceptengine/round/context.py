"""Everything one run needs in one place: resolved config, the store, the runner and the queue."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from conceptengine.config import EngineConfig
from conceptengine.engine.model_refs import model_dir
from conceptengine.engine.runner import Runner
from conceptengine.engine.steps import StepListener
from conceptengine.engine.store import RunStore
from conceptengine.review.db import run_queue_url
from conceptengine.round.errors import RunError
from conceptengine.round.sources import RunSources, sources_for


def resolve(base: Path, maybe_relative: str) -> str:
    """Relative paths in a config resolve against the config file's folder (the workspace)."""
    if "://" in maybe_relative or os.path.isabs(maybe_relative):
        return maybe_relative
    return str((base / maybe_relative).resolve())


@dataclass(frozen=True)
class RunInputs:
    """Where a run's inputs are, from its config and workspace alone: start_run checks them before it
    creates the run directory or starts Ray."""

    cfg: EngineConfig
    workspace: Path

    def resolve(self, path: str) -> str:
        return resolve(self.workspace, path)

    @cached_property
    def sources(self) -> RunSources:
        return sources_for(self)

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
        if self.sources.ontology_path:
            return self.sources.ontology_path
        raise RunError(f"ontology.path is required when media.source is {self.cfg.media.source!r}")


@dataclass
class RunContext:
    cfg: EngineConfig
    store: RunStore
    runner: Runner
    workspace: Path
    on_step: StepListener | None = None
    config_hash: str = field(init=False)
    inputs: RunInputs = field(init=False)

    def __post_init__(self) -> None:
        self.config_hash = self.cfg.config_hash()
        self.inputs = RunInputs(self.cfg, self.workspace)

    @property
    def sources(self) -> RunSources:
        return self.inputs.sources

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
        return run_queue_url(self.cfg.review.url, self.store)
