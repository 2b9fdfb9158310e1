"""Committing as a stage: the workers join routed blocks with the round's human decisions (DECIDED rows),
and the COMMIT step's write tasks turn those into annotation and verdict rows. A pair no human had to see is
decided from its routes alone, so only the human-reviewed pairs' decisions are loaded on each worker."""

from __future__ import annotations

from typing import Any, ClassVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from conceptengine.engine.stage import Stage, StageConfig, register
from conceptengine.round.annotations import DECIDED, decide
from conceptengine.verifiers.route_stage import ROUTED


@register
class CommitStage(Stage):
    """ROUTED rows in, DECIDED rows out. `decisions_urls`: HUMAN_REVIEW's DECISIONS files (none: no pair was
    reviewed, e.g. bench_scale's rounds without people)."""

    name: ClassVar[str] = "commit"
    input_columns: ClassVar[tuple[str, ...]] = tuple(ROUTED.names)
    output_columns: ClassVar[tuple[str, ...]] = tuple(DECIDED.names)
    runs_as_task: ClassVar[bool] = True

    def __init__(self, cfg: StageConfig, round: int, decisions_urls: tuple[str, ...] = (), **params: Any):
        super().__init__(cfg, **params)
        self.round = round
        self.decisions_urls = decisions_urls
        self.human: dict[str, dict] = {}

    def setup(self) -> None:
        for url in self.decisions_urls:
            with fsspec.open(url, "rb") as f:
                self.human |= {d["pair_id"]: d for d in pq.read_table(f).to_pylist()}

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_input(batch)
        return decide(batch, self.human, self.round)
