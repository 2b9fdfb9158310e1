"""Runners execute a chain of stages over a table: in-process (tests, one-box runs) or on Ray actor pools.

A chain lets a CPU stage feed a GPU stage without a round trip through storage: on Ray each link is its
own `map_batches` with its own actor pool and resources, and blocks stream from one pool to the next
(so image decoding runs on CPU actors while the GPU actors only compute). Both runners give the same
rows; the output is sorted by a key so results never depend on the order Ray's actors finish in.
`stream_chain` does the same from files to files (block steps, engine/block_files.py); `stream_steps` runs
several consecutive steps' chains as one stream, each step writing its own block files on the way (so a step's
output is still its own, resumable, while its blocks flow straight on into the next step's pools); and
`stream_groups` writes files of whole groups of rows (a commit's WebDataset shards: one sample per image). On
Ray the rows never reach the caller.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import ray.data
from ray.data.block import BlockAccessor
from ray.data.datasource import Datasink
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from conceptengine.engine.block_files import (
    BLOCK_FILE_ROWS,
    BlockStats,
    Outputs,
    Schemas,
    by_table,
    write_outputs,
)
from conceptengine.engine.checkpoints import is_remote
from conceptengine.engine.stage import Stage, StageConfig

BATCHES_PER_BLOCK = 16


class ResourceConfigError(ValueError):
    """Stage resources in the config cannot run on this cluster; the message names the stages."""


@dataclass(frozen=True)
class Link:
    """One stage of a chain, with its resources (cfg) and constructor params."""

    stage_cls: type[Stage]
    cfg: StageConfig
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Segment:
    """One step of a stream: its chain, the step folder it writes into, the tables it keeps of its chain's
    output (and their schemas), the rows of its input it maps (`source_filter`), and counts of each output
    block for its manifest (`block_stats`). In a stream of several, a segment's whole chain output is the
    next one's input."""

    chain: list[Link]
    step_url: str
    outputs: Outputs
    schema: Schemas
    source_filter: pc.Expression | None = None
    block_stats: BlockStats | None = None


def link_key(link: Link) -> str:
    """Equal for links that build the same stage: a set-up instance can serve both."""
    return link.stage_cls.name + repr(sorted(link.params.items())) + link.cfg.model_dump_json()


class Runner(Protocol):
    def run_chain(
        self, chain: list[Link], table: pa.Table, sort_key: str, output_schema: pa.Schema
    ) -> pa.Table: ...

    def stream_chain(
        self,
        chain: list[Link],
        sources: list[str],
        step_url: str,
        outputs: Outputs,
        output_schema: Schemas,
        source_filter: pc.Expression | None = None,
        block_stats: BlockStats | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """Map the rows of the Parquet files at `sources` (URLs) that pass `source_filter` through the chain and
        write the result into the step folder `step_url` as block files, one set per output table
        (engine/block_files.py); returns each table's block records for the step's manifest, the first
        table's with `block_stats` of each output block (block_files.total_stats adds them up). No row
        passes through the caller."""
        ...

    def stream_steps(
        self, segments: list[Segment], sources: list[str]
    ) -> list[dict[str, list[dict[str, Any]]]]:
        """Like stream_chain for consecutive steps at once: the rows of `sources` go through every segment in
        turn, and each segment writes its own block files into its step folder; returns each segment's block
        records per table. Fails fast (ResourceConfigError) when the segments' actor pools together do not fit
        the cluster: `fits` says so beforehand."""
        ...

    def fits(self, chain: list[Link]) -> bool:
        """Can these links' actor pools run side by side (one stream)?"""
        ...

    def stream_groups(
        self,
        sources: list[str],
        key: str,
        to_row: Callable[[pa.Table], pa.Table],
        write: Callable[[pa.Table], list[dict[str, Any]]],
        rows_per_write: int,
    ) -> list[dict[str, Any]]:
        """Group the rows of the Parquet files at `sources` by column `key`; `to_row(group)` makes one row of
        a group's rows, and `write(rows)` writes about `rows_per_write` of those at a time and returns the
        records of its files, which this returns. No row passes through the caller."""
        ...

    def run_workers(
        self, worker_cls: type, kwargs: list[dict[str, Any]], method: str, *args: Any
    ) -> list[Any]:
        """One `worker_cls(**kw)` per entry of `kwargs`, each calling `method(*args)` (e.g. simulated reviewers
        answering a queue side by side): concurrently as Ray actors, one after another in-process."""
        ...

    def shutdown(self) -> None: ...


def run_stage(
    runner: Runner,
    stage_cls: type[Stage],
    cfg: StageConfig,
    params: dict[str, Any],
    table: pa.Table,
    sort_key: str,
    output_schema: pa.Schema,
) -> pa.Table:
    return runner.run_chain([Link(stage_cls, cfg, params)], table, sort_key, output_schema)


def _sorted(table: pa.Table, key: str) -> pa.Table:
    return table.sort_by([(key, "ascending")]) if table.num_rows else table


def _batches(table: pa.Table, size: int):
    for start in range(0, table.num_rows, size):
        yield table.slice(start, size)


class LocalRunner:
    """Calls setup() once per stage instance and feeds each link batches of its own batch_size."""

    def __init__(self) -> None:
        self._instances: dict[str, Stage] = {}

    def _instance(self, link: Link) -> Stage:
        # Reuse a stage across rounds while its params are unchanged: model weights load once per run.
        key = link_key(link)
        if key not in self._instances:
            stage = link.stage_cls(link.cfg, **link.params)
            stage.setup()
            self._instances[key] = stage
        return self._instances[key]

    def run_chain(self, chain, table, sort_key, output_schema):
        if table.num_rows == 0:
            return output_schema.empty_table()
        return _sorted(self._mapped(chain, table), sort_key)

    def _mapped(self, chain: list[Link], table: pa.Table) -> pa.Table:
        for link in chain:
            stage = self._instance(link)
            outs = [stage(batch) for batch in _batches(table, link.cfg.batch_size)]
            table = pa.concat_tables(outs, promote_options="default")
        return table

    def stream_chain(
        self, chain, sources, step_url, outputs, output_schema, source_filter=None, block_stats=None
    ):
        segment = Segment(chain, step_url, outputs, output_schema, source_filter, block_stats)
        return self.stream_steps([segment], sources)[0]

    def stream_steps(self, segments, sources):
        """One source file at a time through every segment, one block file out per source file and segment:
        memory holds one file's rows."""
        written: list[list[dict[str, Any]]] = [[] for _ in segments]
        for url in sources:
            table = _read(url)
            for segment, records in zip(segments, written, strict=True):
                if segment.source_filter is not None:
                    table = table.filter(segment.source_filter)
                if not table.num_rows:
                    break
                table = self._mapped(segment.chain, table)
                records += write_outputs(segment.step_url, segment.outputs, table, segment.block_stats)
        return [_by_table(s, records) for s, records in zip(segments, written, strict=True)]

    def fits(self, chain: list[Link]) -> bool:
        return True  # one process maps the links one after another

    def stream_groups(self, sources, key, to_row, write, rows_per_write):
        """All the sources in memory at once: a laptop's round."""
        table = _sorted(pa.concat_tables([_read(url) for url in sources], promote_options="default"), key)
        keys = table[key].to_pylist()
        starts = [i for i in range(len(keys)) if i == 0 or keys[i] != keys[i - 1]] + [len(keys)]
        rows = [to_row(table.slice(a, b - a)) for a, b in itertools.pairwise(starts)]
        chunks = [pa.concat_tables(rows[k : k + rows_per_write]) for k in range(0, len(rows), rows_per_write)]
        return [record for chunk in chunks for record in write(chunk)]

    def run_workers(
        self, worker_cls: type, kwargs: list[dict[str, Any]], method: str, *args: Any
    ) -> list[Any]:
        return [getattr(worker_cls(**kw), method)(*args) for kw in kwargs]

    def shutdown(self) -> None:
        self._instances.clear()


class RayRunner:
    """Maps each link over a Ray Dataset with an actor pool; model stages get their GPU share from cfg."""

    def __init__(self, num_cpus: int | None = None, address: str | None = None) -> None:
        if not ray.is_initialized():
            ray.init(**ray_init_args(num_cpus, address))
        # Ray Data logs every dataset's plan at INFO, and warns that its progress bars are off: the engine turns
        # them off (configure_ray_data) because it reports progress itself. Levels are only ever raised here:
        # the CLI may have quieted these loggers further (output.py).
        for name, level in (("ray.data", logging.WARNING), ("ray.data._internal.progress", logging.ERROR)):
            logger = logging.getLogger(name)
            logger.setLevel(max(level, logger.getEffectiveLevel()))
        self._ray = ray

    def run_chain(self, chain, table, sort_key, output_schema):

        if table.num_rows == 0:
            return output_schema.empty_table()
        self._check_chain_fits(chain)
        configure_ray_data()
        first = chain[0].cfg
        n_blocks = max(1, min(first.concurrency * 2, -(-table.num_rows // first.batch_size)))
        ds = _mapped(ray.data.from_arrow(table).repartition(n_blocks), chain)
        result = pa.concat_tables(
            [self._ray.get(ref) for ref in ds.to_arrow_refs()], promote_options="default"
        )
        return _sorted(result, sort_key)

    def stream_chain(
        self,
        chain,
        sources,
        step_url,
        outputs,
        output_schema,
        source_filter=None,
        block_stats=None,
        rows_per_file=BLOCK_FILE_ROWS,
    ):
        segment = Segment(chain, step_url, outputs, output_schema, source_filter, block_stats)
        return self.stream_steps([segment], sources, rows_per_file)[0]

    def stream_steps(self, segments, sources, rows_per_file=BLOCK_FILE_ROWS):
        """Ray Data reads the sources on the workers, the segments' actor pools map them one after another,
        and write tasks upload the blocks; the driver only receives the block records. A segment before the
        last writes each block as it passes (`_write_and_pass_on`) and hands its records to a `_RecordBook`
        actor; the last one writes through a RecordsSink."""
        self._check_chain_fits([link for segment in segments for link in segment.chain])
        configure_ray_data()
        # Blocks of a few batches: a step's whole input may be one file, and an actor pool works on as many
        # blocks at once as it has actors.
        rows_per_block = segments[0].chain[0].cfg.batch_size * BATCHES_PER_BLOCK
        ds = _read_files(sources).repartition(target_num_rows_per_block=rows_per_block)
        book = _record_book(len(segments) - 1) if len(segments) > 1 else None
        for index, segment in enumerate(segments):
            if segment.source_filter is not None:
                ds = ds.map_batches(
                    _keep, fn_kwargs={"keep": segment.source_filter}, batch_format="pyarrow", batch_size=None
                )
            ds = _mapped(ds, segment.chain)
            if index < len(segments) - 1:
                ds = ds.map_batches(
                    _write_and_pass_on,
                    fn_kwargs={"write": _block_writer(segment), "book": book, "segment": index},
                    batch_format="pyarrow",
                    batch_size=None,
                    num_cpus=PASS_ON_CPUS,
                )
        sink = RecordsSink(_block_writer(segments[-1]), rows_per_file)
        ds.write_datasink(sink)
        written = [sink.written]
        if book is not None:
            written = [*self._ray.get(book.take.remote()), sink.written]
            self._ray.kill(book)
        return [_by_table(s, records) for s, records in zip(segments, written, strict=True)]

    def fits(self, chain: list[Link]) -> bool:
        try:
            self._check_chain_fits(chain)
        except ResourceConfigError:
            return False
        return True

    def stream_groups(self, sources, key, to_row, write, rows_per_write):
        configure_ray_data()
        grouped = _read_files(sources).groupby(key)
        # One row per group, so blocks can be split and joined freely: each write gets `rows_per_write` groups
        # (a shuffle's partitions are many and small).
        rows = grouped.map_groups(to_row, batch_format="pyarrow")
        sink = RecordsSink(write, rows_per_write)
        rows.repartition(target_num_rows_per_block=rows_per_write).write_datasink(sink)
        return sink.written

    def _check_chain_fits(self, chain: list[Link]) -> None:
        """Actor pools that claim more than half the cluster's CPUs leave Ray Data's scheduler no budget to
        split and move blocks, and the dataset waits forever (seen with chained pools of 0.5 + 1 CPU, and
        with one pool of 2 x 1 CPU, on a 2-CPU box). Fail fast with the numbers instead."""
        total = self._ray.cluster_resources().get("CPU", 0.0)
        claimed = sum(link.cfg.num_cpus * link.cfg.concurrency for link in chain)
        if claimed > total / 2:
            names = " + ".join(
                f"{link.stage_cls.name} ({link.cfg.num_cpus} x {link.cfg.concurrency})" for link in chain
            )
            raise ResourceConfigError(
                f"stage(s) {names} claim {claimed:g} of the cluster's {total:g} CPUs; a step's actor pools may "
                "claim at most half (Ray Data needs the rest to move blocks): lower their stage.num_cpus or "
                "concurrency (num_cpus is a reservation: a 0.5-CPU actor still computes on a whole core)"
            )

    def run_workers(
        self, worker_cls: type, kwargs: list[dict[str, Any]], method: str, *args: Any
    ) -> list[Any]:
        # A quarter CPU each: workers that wait on a queue leave the cluster to the stages that compute.
        actor_cls = ray.remote(num_cpus=0.25)(worker_cls)
        actors = [actor_cls.remote(**kw) for kw in kwargs]
        try:
            return ray.get([getattr(a, method).remote(*args) for a in actors])
        finally:
            for a in actors:
                ray.kill(a)

    def shutdown(self) -> None:
        if self._ray.is_initialized():
            self._ray.shutdown()


def configure_ray_data() -> None:
    """The Ray Data settings every dataset of the engine runs with (call before building one)."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the engine reports progress itself
    # Ray 2.60's default Parquet reader (V2) lists the files in a task of its own and costs ~1 s more per
    # dataset than V1 (0.65 s vs 1.65 s to read and write a 10 k-row file here); a round runs one dataset a
    # step, so that second is paid five times a round. V1 reads the footers in the driver: metadata only.
    context.use_datasource_v2 = False


def _read_files(sources: list[str]) -> ray.data.Dataset:
    """The Parquet files at `sources` (URLs), one read task each: V1 would otherwise pack several block files
    into one task (at 1 M pairs that made a routing step 1.5x slower); a block file holds at most
    BLOCK_FILE_ROWS rows, so one task's read stays small."""
    paths, filesystem = arrow_filesystem(sources)
    return ray.data.read_parquet(paths, filesystem=filesystem, override_num_blocks=len(paths))


def _mapped(ds: ray.data.Dataset, chain: list[Link]) -> ray.data.Dataset:
    """Each link its own `map_batches` with its own actor pool and resources (a light stage: tasks)."""
    for link in chain:
        if link.stage_cls.runs_as_task:
            ds = ds.map_batches(
                _run_as_task,
                fn_kwargs={"link": link},
                batch_size=link.cfg.batch_size,
                batch_format="pyarrow",
                num_cpus=link.cfg.num_cpus,
                compute=ray.data.TaskPoolStrategy(size=link.cfg.concurrency),
            )
            continue
        ds = ds.map_batches(
            _RayStageAdapter,
            fn_constructor_kwargs={"stage_cls": link.stage_cls, "cfg": link.cfg, "params": link.params},
            batch_size=link.cfg.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=link.cfg.concurrency),
            num_cpus=link.cfg.num_cpus,
            num_gpus=link.cfg.num_gpus or None,
        )
    return ds


def _keep(batch: pa.Table, keep: pc.Expression) -> pa.Table:
    return batch.filter(keep)


def _block_writer(segment: Segment) -> Callable[[pa.Table], list[dict[str, Any]]]:
    return functools.partial(write_outputs, segment.step_url, segment.outputs, stats=segment.block_stats)


def _by_table(segment: Segment, records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return by_table(records, segment.outputs, segment.step_url, segment.schema)


# A block written on its way to the next step's pool: Parquet encoding and an upload, no model. A fraction of a
# CPU so that the writes never wait behind the pools' reservations.
PASS_ON_CPUS = 0.25


def _write_and_pass_on(batch: pa.Table, write, book, segment: int) -> pa.Table:
    """Write one block of a segment's output (its files), record them with the book, pass the block on."""
    records = write(batch)
    ray.get(book.add.remote(segment, records))  # recorded before the block moves on: none is lost at the end
    return batch


class _RecordBook:
    """The block records of a stream's inner segments, by file: a task Ray retries rewrites the same file (block
    files are named by content) and records it once."""

    def __init__(self, segments: int):
        self._records: list[dict[str, dict[str, Any]]] = [{} for _ in range(segments)]

    def add(self, segment: int, records: list[dict[str, Any]]) -> None:
        for record in records:
            self._records[segment][record["file"]] = record

    def take(self) -> list[list[dict[str, Any]]]:
        return [list(by_file.values()) for by_file in self._records]


def _record_book(segments: int):
    """A _RecordBook actor on the driver's node: a worker node lost mid-stream cannot take the records with it."""
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0)(_RecordBook).options(scheduling_strategy=here).remote(segments)


def arrow_filesystem(urls: list[str]) -> tuple[list[str], pafs.FileSystem | None]:
    """Paths and a pyarrow filesystem for Ray Data's readers, through fsspec so that every URL the run store
    opens (s3:// with its endpoint and credentials, gs://, local paths) reads the same way on the workers."""
    if not urls:
        raise ValueError("no source files to read")
    fs, _ = fsspec.core.url_to_fs(urls[0])
    paths = [fsspec.core.url_to_fs(u)[1] for u in urls]
    return paths, (pafs.PyFileSystem(pafs.FSSpecHandler(fs)) if is_remote(urls[0]) else None)


def _read(url: str) -> pa.Table:
    with fsspec.open(url, "rb") as f:
        return pq.read_table(f)


class RecordsSink(Datasink):
    """Ray Data sink: each write task hands its blocks, as one table, to `write` (e.g. `write_outputs`: one
    file per output table), which returns records of what it wrote; the driver receives the records only,
    in `written`, once every task has finished."""

    def __init__(
        self, write: Callable[[pa.Table], list[dict[str, Any]]], rows_per_file: int = BLOCK_FILE_ROWS
    ):
        self._write = write
        self.rows_per_file = rows_per_file
        self.written: list[dict[str, Any]] = []

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks, ctx) -> list[dict[str, Any]]:  # runs on a worker
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return []
        return self._write(pa.concat_tables(tables, promote_options="default"))

    def on_write_complete(self, write_result) -> None:  # runs on the driver
        self.written = [r for records in write_result.write_returns for r in records]


_TASK_STAGES: dict[str, Stage] = {}  # per worker process: the light stages it has set up, by link


def _run_as_task(batch: pa.Table, link: Link) -> pa.Table:
    key = link_key(link)
    if key not in _TASK_STAGES:
        if len(_TASK_STAGES) >= 16:
            _TASK_STAGES.clear()  # a long-lived worker serves many rounds' thresholds: keep the recent ones
        stage = link.stage_cls(link.cfg, **link.params)
        stage.setup()
        _TASK_STAGES[key] = stage
    return _TASK_STAGES[key](batch)


class _RayStageAdapter:
    """The callable class Ray instantiates once per actor: builds the stage and runs its setup()."""

    def __init__(self, stage_cls: type[Stage], cfg: StageConfig, params: dict[str, Any]):
        self.stage = stage_cls(cfg, **params)
        self.stage.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.stage(batch)


def ray_init_args(num_cpus: int | None, address: str | None) -> dict[str, Any]:
    """Join the cluster at `address` (else RAY_ADDRESS, Ray's own convention), or start a private Ray here.

    A joined cluster's resources are its own: Ray refuses num_cpus when connecting, so asking for both is a
    ResourceConfigError rather than Ray's traceback."""
    quiet = {"log_to_driver": False, "configure_logging": False}
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        return {"num_cpus": num_cpus, "include_dashboard": False, **quiet}
    if num_cpus is not None:
        raise ResourceConfigError(
            f"ray_num_cpus={num_cpus} sizes a private Ray, but the run joins the cluster at {address!r} "
            "(ray_address or RAY_ADDRESS): unset one of them"
        )
    return {"address": address, **quiet}  # the cluster's head decides whether it has a dashboard


def make_runner(kind: str, num_cpus: int | None = None, address: str | None = None) -> Runner:
    if kind == "ray":
        return RayRunner(num_cpus=num_cpus, address=address)
    if kind == "local":
        return LocalRunner()
    raise ValueError(f"unknown runner {kind!r}; use 'ray' or 'local'")
