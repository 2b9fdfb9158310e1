"""The stage contract: one class per processing step, run the same way in-process or on Ray actors.

Modelled on NeMo Curator's ProcessingStage and Data-Juicer's op registry, without metaclass magic:
a stage declares its columns and resources, loads its models in `setup()` (once per actor), and
maps a pyarrow batch to a pyarrow batch. Rows that fail carry an `error` string instead of raising,
so one corrupt image never ends a run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, TypeVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Params = TypeVar("Params", bound=BaseModel)


class StageConfig(BaseModel):
    """Resources and batching of one stage; every field is overridable in YAML."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(16, ge=1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    concurrency: int = Field(1, ge=1)


class Stage(ABC):
    name: ClassVar[str]
    input_columns: ClassVar[tuple[str, ...]]
    output_columns: ClassVar[tuple[str, ...]]
    # A light stage (no model, cheap setup) runs on Ray as tasks on Ray's pooled worker processes, each keeping
    # one instance per params, instead of on an actor pool started for every step it serves.
    runs_as_task: ClassVar[bool] = False

    def __init__(self, cfg: StageConfig, **params: Any):
        self.cfg = cfg
        self.params = params

    def setup(self) -> None:
        """Load weights and other per-actor state. Called once before the first batch."""

    @abstractmethod
    def __call__(self, batch: pa.Table) -> pa.Table: ...

    def check_input(self, batch: pa.Table) -> None:
        missing = [c for c in self.input_columns if c not in batch.column_names]
        if missing:
            raise KeyError(f"stage {self.name!r} needs columns {missing}; batch has {batch.column_names}")


def parse_params(stage_name: str, model: type[Params], params: dict[str, Any]) -> Params:
    """A stage's params, validated by its params model; one ValueError that names every key to fix."""
    try:
        return model(**params)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            key = ".".join(map(str, e["loc"]))
            problems.append(
                f"unknown params {key!r}" if e["type"] == "extra_forbidden" else f"{key}: {e['msg']}"
            )
        raise ValueError(f"stage {stage_name!r} params: {'; '.join(problems)}") from None


STAGES: dict[str, type[Stage]] = {}


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: makes a stage addressable by name from configs and runners."""
    if cls.name in STAGES and STAGES[cls.name] is not cls:
        raise ValueError(f"two stages are registered as {cls.name!r}")
    STAGES[cls.name] = cls
    return cls


def get_stage(name: str) -> type[Stage]:
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; registered: {sorted(STAGES)}") from None
