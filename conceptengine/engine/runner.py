"""Runners execute one stage over a table: in-process (tests, one-box runs) or on Ray actor pools.

Both give the same rows; the Ray runner's output is sorted by the stage's key so that results never
depend on the order Ray's actors finish in.
"""

from __future__ import annotations

from typing import Any, Protocol

import pyarrow as pa

from conceptengine.engine.stage import Stage, StageConfig


class Runner(Protocol):
    def run(
        self,
        stage_cls: type[Stage],
        cfg: StageConfig,
        params: dict[str, Any],
        table: pa.Table,
        sort_key: str,
        output_schema: pa.Schema,
    ) -> pa.Table: ...

    def shutdown(self) -> None: ...


def _sorted(table: pa.Table, key: str) -> pa.Table:
    return table.sort_by([(key, "ascending")]) if table.num_rows else table


class LocalRunner:
    """Calls setup() once per stage instance and feeds batches of cfg.batch_size in order."""

    def __init__(self) -> None:
        self._instances: dict[tuple[str, str], Stage] = {}

    def _instance(self, stage_cls: type[Stage], cfg: StageConfig, params: dict[str, Any]) -> Stage:
        # Reuse a stage across rounds when its params are unchanged: model weights load once per run.
        key = (stage_cls.name, repr(sorted(params.items())) + cfg.model_dump_json())
        if key not in self._instances:
            stage = stage_cls(cfg, **params)
            stage.setup()
            self._instances[key] = stage
        return self._instances[key]

    def run(self, stage_cls, cfg, params, table, sort_key, output_schema):
        if table.num_rows == 0:
            return output_schema.empty_table()
        stage = self._instance(stage_cls, cfg, params)
        outs = [stage(batch) for batch in _batches(table, cfg.batch_size)]
        return _sorted(pa.concat_tables(outs, promote_options="default"), sort_key)

    def shutdown(self) -> None:
        self._instances.clear()


def _batches(table: pa.Table, size: int):
    for start in range(0, table.num_rows, size):
        yield table.slice(start, size)


class RayRunner:
    """Maps a stage over a Ray Dataset with an actor pool; model stages get their GPU share from cfg."""

    def __init__(self, num_cpus: int | None = None) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        self._ray = ray

    def run(self, stage_cls, cfg, params, table, sort_key, output_schema):
        import ray.data

        if table.num_rows == 0:
            return output_schema.empty_table()
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        n_blocks = max(1, min(cfg.concurrency * 2, -(-table.num_rows // cfg.batch_size)))
        ds = ray.data.from_arrow(table).repartition(n_blocks)
        out = ds.map_batches(
            _RayStageAdapter,
            fn_constructor_kwargs={"stage_cls": stage_cls, "cfg": cfg, "params": params},
            batch_size=cfg.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
            num_cpus=cfg.num_cpus,
            num_gpus=cfg.num_gpus or None,
        )
        result = pa.concat_tables(
            [self._ray.get(ref) for ref in out.to_arrow_refs()], promote_options="default"
        )
        return _sorted(result, sort_key)

    def shutdown(self) -> None:
        if self._ray.is_initialized():
            self._ray.shutdown()


class _RayStageAdapter:
    """The callable class Ray instantiates once per actor: builds the stage and runs its setup()."""

    def __init__(self, stage_cls: type[Stage], cfg: StageConfig, params: dict[str, Any]):
        self.stage = stage_cls(cfg, **params)
        self.stage.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.stage(batch)


def make_runner(kind: str, num_cpus: int | None = None) -> Runner:
    if kind == "ray":
        return RayRunner(num_cpus=num_cpus)
    if kind == "local":
        return LocalRunner()
    raise ValueError(f"unknown runner {kind!r}; use 'ray' or 'local'")
