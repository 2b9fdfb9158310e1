"""Routing as a stage: a block step's workers route their own blocks (verifiers/routing.py decides each row
from its scores, the thresholds and a hash of its id alone, so blocks are independent)."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa

from conceptengine.engine.stage import Stage, StageConfig, register
from conceptengine.engine.tables import VERIFIED
from conceptengine.verifiers.routing import NEEDED, ROUTE_COLUMNS, TaskThresholds, route

ROUTED = pa.schema(list(VERIFIED) + [pa.field(name, typ) for name, typ in ROUTE_COLUMNS])


@register
class RouteStage(Stage):
    """VERIFIED rows in, the same rows with the ROUTE_COLUMNS out."""

    name: ClassVar[str] = "route"
    input_columns: ClassVar[tuple[str, ...]] = ("pair_id", *NEEDED)
    output_columns: ClassVar[tuple[str, ...]] = tuple(ROUTED.names)
    runs_as_task: ClassVar[bool] = True

    def __init__(
        self,
        cfg: StageConfig,
        thresholds: dict[str, TaskThresholds],
        audit_share: float,
        seed: int,
        ev_scope: str,
        **params: Any,
    ):
        super().__init__(cfg, **params)
        self.thresholds = thresholds
        self.audit_share = audit_share
        self.seed = seed
        self.ev_scope = ev_scope

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_input(batch)
        return route(batch, self.thresholds, self.audit_share, self.seed, self.ev_scope)
