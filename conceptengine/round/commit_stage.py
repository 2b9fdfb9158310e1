"""Committing, as a stage, the pairs that need no human: every mask decided by MV's thresholds and the pair
accepted by EV's. At scale the workers turn routed blocks into annotation rows and write them; the pairs a
human must see go through HUMAN_REVIEW and COMMIT as before."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa

from conceptengine.engine.stage import Stage, StageConfig, register
from conceptengine.engine.tables import ANNOTATIONS
from conceptengine.round.annotations import build_annotations, decided_without_humans
from conceptengine.verifiers.route_stage import ROUTED


@register
class CommitAutomaticStage(Stage):
    """ROUTED rows in, ANNOTATIONS rows out for the pairs decided without a human."""

    name: ClassVar[str] = "commit_automatic"
    input_columns: ClassVar[tuple[str, ...]] = tuple(ROUTED.names)
    output_columns: ClassVar[tuple[str, ...]] = tuple(ANNOTATIONS.names)
    runs_as_task: ClassVar[bool] = True

    def __init__(self, cfg: StageConfig, round: int, **params: Any):
        super().__init__(cfg, **params)
        self.round = round

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_input(batch)
        return build_annotations(batch, decided_without_humans(batch), self.round)
