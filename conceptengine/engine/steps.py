"""Run a step at most once: reuse its stored output when its manifest matches, else compute it."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from conceptengine.engine.block_files import BlockStats, Outputs, Schemas
from conceptengine.engine.runner import Link, Runner, Segment
from conceptengine.engine.store import RunStore, StepRef, fingerprint_of

# Called as on_step(step_rel, phase, info), phase "start", "training" or "done": drives progress displays.
StepListener = Callable[[str, str, dict], None]


class StepHost(Protocol):
    """What running a step needs of a run: where outputs go, which config they belong to, who listens."""

    store: RunStore
    config_hash: str
    on_step: StepListener | None


class StreamHost(StepHost, Protocol):
    """What running steps as one stream needs besides: the runner that streams them."""

    runner: Runner


class StepResult:
    """A finished step: its manifest, and its tables, read from the store on first use when the step's
    workers wrote them (block steps)."""

    def __init__(
        self,
        ref: StepRef,
        tables: dict[str, pa.Table],
        manifest: dict,
        reused: bool,
        store: RunStore | None = None,
    ):
        self.ref = ref
        self.tables = tables
        self.manifest = manifest
        self.reused = reused
        self.store = store

    @property
    def fingerprint(self) -> str:
        return self.manifest["output_fingerprint"]

    def __getitem__(self, name: str) -> pa.Table:
        if name not in self.tables and self.store is not None and name in self.manifest.get("rows", {}):
            self.tables[name] = self.store.read_step(self.ref, name)
        return self.tables[name]

    def read(self, name: str, where: Callable[[pa.Table], pa.Array]) -> pa.Table:
        """Only the rows of table `name` that `where` marks: from memory when the table is there, else from the
        store file by file (RunStore.read_step), never holding the whole table."""
        if name in self.tables or self.store is None:
            table = self[name]
            return table.filter(where(table))
        return self.store.read_step(self.ref, name, where=where)

    def parts(self, name: str, columns: list[str]) -> Iterator[pa.Table]:
        """Table `name`'s `columns`, a file at a time (the whole table when it is in memory): for the driver's
        passes over a large table that keep only what they need of it."""
        if name in self.tables or self.store is None:
            yield self[name].select(columns)
        else:
            yield from self.store.iter_step(self.ref, name, columns)

    def urls(self, name: str) -> list[str]:
        """The files holding table `name`, for workers to read (a step computed in the driver has one)."""
        if self.store is None:
            raise ValueError(f"step {self.ref.rel} has no store to read {name!r} from")
        return self.store.step_urls(self.ref, name)


def run_step(
    ctx: StepHost,
    ref: StepRef,
    inputs: list[str],
    names: list[str],
    compute: Callable[[], tuple[dict[str, pa.Table], dict]],
) -> StepResult:
    """`inputs` are upstream fingerprints; `compute` returns (tables, extra manifest fields)."""
    fingerprint = fingerprint_of(ref.rel, *inputs)
    if ctx.store.is_done(ref, ctx.config_hash, fingerprint):
        return _reused(ctx, ref)  # its tables are read on first use
    _notify(ctx)(ref.rel, "start", {})
    started = time.monotonic()
    tables, extra = compute()
    missing = set(names) - set(tables)
    if missing:
        raise RuntimeError(f"step {ref.rel} produced no table(s) {sorted(missing)}")
    seconds = _since(started)
    manifest = ctx.store.write_step(ref, tables, ctx.config_hash, fingerprint, extra | {"seconds": seconds})
    _notify(ctx)(ref.rel, "done", {"reused": False, "seconds": seconds, **_counts(manifest)})
    return StepResult(ref, tables, manifest, reused=False, store=ctx.store)


def run_block_step(
    ctx: StepHost,
    ref: StepRef,
    inputs: list[str],
    stream: Callable[[str], tuple[dict[str, list[dict]], dict]],
    sort_by: dict[str, str] | None = None,
) -> StepResult:
    """Like run_step, for a step whose workers write its tables (engine/block_files.py): `stream(step_url)`
    returns (block records per table, extra manifest fields); the driver holds no table of it. `sort_by`:
    the column each table is read back sorted by (RunStore.write_block_step)."""
    fingerprint = fingerprint_of(ref.rel, *inputs)
    if ctx.store.is_done(ref, ctx.config_hash, fingerprint):
        return _reused(ctx, ref)
    _start(ctx, ref)
    started = time.monotonic()
    with ctx.store.writing(ref.rel):  # a full disk or read-only run dir on a worker: one clear error
        files, extra = stream(ctx.store.url_for(ref.rel))
    return _finish(ctx, ref, fingerprint, files, extra | {"seconds": _since(started)}, sort_by)


# Given its step folder's URL, the first step of a stream returns the files its chain reads and the block
# records of tables it wrote itself first (e.g. the round's selection of images); the runner writes the rest.
StreamSources = Callable[[str], tuple[list[str], dict[str, list[dict]]]]


@dataclass
class BlockStep:
    """A block step that can run in one stream with the steps beside it (run_block_steps): its chain maps the
    whole chain output of the step before it, or `sources` when it comes first.

    `inputs`: the fingerprints it depends on besides the step before it; `reads`: the table of the step before
    it that it maps (a table that keeps every row of that step's chain output); `extra`: its manifest's
    fields, made from its block records."""

    ref: StepRef
    inputs: list[str]
    chain: list[Link]
    outputs: Outputs
    schema: Schemas
    reads: str | None = None
    sources: StreamSources | None = None
    source_filter: pc.Expression | None = None
    block_stats: BlockStats | None = None
    sort_by: dict[str, str] | None = None
    extra: Callable[[dict[str, list[dict]]], dict[str, Any]] = field(default=lambda files: {})


def run_block_steps(ctx: StreamHost, steps: list[BlockStep]) -> list[StepResult]:
    """Run (or reuse) consecutive block steps. From the first that is not done, the longest run of steps whose
    actor pools fit the cluster side by side streams as one (Runner.stream_steps), then the next run, and so
    on (a step whose pools do not fit beside the next one's streams alone). Each step still writes its own
    block files and manifest, in order, so a crash mid-stream resumes from the last manifest written."""
    results: list[StepResult] = []
    index = 0
    while index < len(steps):
        step = steps[index]
        fingerprint = fingerprint_of(step.ref.rel, *_upstream(results), *step.inputs)
        if ctx.store.is_done(step.ref, ctx.config_hash, fingerprint):
            results.append(_reused(ctx, step.ref))
            index += 1
            continue
        run = next(
            (
                steps[index : index + n]
                for n in range(len(steps) - index, 1, -1)
                if ctx.runner.fits([link for s in steps[index : index + n] for link in s.chain])
            ),
            [step],
        )
        results += _stream(ctx, run, results, fingerprint)
        index += len(run)
    return results


def _upstream(results: list[StepResult]) -> list[str]:
    return [results[-1].fingerprint] if results else []


def _stream(
    ctx: StreamHost, steps: list[BlockStep], before: list[StepResult], fingerprint: str
) -> list[StepResult]:
    """Steps of a stream, the first with `fingerprint`: one Runner.stream_steps, then their manifests."""
    first = steps[0]
    for earlier, step in itertools.pairwise(steps):
        if step.reads not in earlier.outputs or earlier.outputs[step.reads] is not None:
            raise ValueError(
                f"step {step.ref.rel} maps {earlier.ref.rel}'s whole chain output, so it must read a table "
                f"that keeps every row of it; {step.reads!r} does not"
            )
    for step in steps[1:]:
        ctx.store.invalidate(step.ref)
    _start(ctx, first.ref)
    started = time.monotonic()
    with ctx.store.writing(first.ref.rel):
        own: dict[str, list[dict]] = {}
        if first.reads is None:
            if first.sources is None:
                raise ValueError(f"step {first.ref.rel} starts a stream, so it needs its sources")
            sources, own = first.sources(ctx.store.url_for(first.ref.rel))
        else:
            sources = before[-1].urls(first.reads)
        segments = [
            Segment(
                s.chain, ctx.store.url_for(s.ref.rel), s.outputs, s.schema, s.source_filter, s.block_stats
            )
            for s in steps
        ]
        written = ctx.runner.stream_steps(segments, sources)
    shared = {"seconds": _since(started)} | (
        {"stream": [s.ref.step for s in steps]} if len(steps) > 1 else {}
    )
    results: list[StepResult] = []
    for index, (step, files) in enumerate(zip(steps, written, strict=True)):
        if index:
            fingerprint = fingerprint_of(step.ref.rel, *_upstream(results), *step.inputs)
        files = (own if index == 0 else {}) | files
        results.append(_finish(ctx, step.ref, fingerprint, files, step.extra(files) | shared, step.sort_by))
    return results


def _reused(ctx: StepHost, ref: StepRef) -> StepResult:
    manifest = ctx.store.manifest(ref)
    _notify(ctx)(ref.rel, "done", {"reused": True, "seconds": 0.0, **_counts(manifest)})
    return StepResult(ref, {}, manifest, reused=True, store=ctx.store)


def _start(ctx: StepHost, ref: StepRef) -> None:
    _notify(ctx)(ref.rel, "start", {})
    ctx.store.invalidate(ref)


def _finish(
    ctx: StepHost,
    ref: StepRef,
    fingerprint: str,
    files: dict[str, list[dict]],
    extra: dict,
    sort_by: dict[str, str] | None,
) -> StepResult:
    manifest = ctx.store.write_block_step(ref, files, ctx.config_hash, fingerprint, extra, sort_by)
    _notify(ctx)(ref.rel, "done", {"reused": False, "seconds": extra["seconds"], **_counts(manifest)})
    return StepResult(ref, {}, manifest, reused=False, store=ctx.store)


def _notify(ctx: StepHost) -> StepListener:
    return ctx.on_step or (lambda *_: None)


def _since(started: float) -> float:
    return round(time.monotonic() - started, 2)


def _counts(manifest: dict) -> dict:
    """What a progress display shows of a finished step: its tables' rows and its manifest's numbers."""
    return {"rows": manifest.get("rows", {}), "extra": manifest.get("extra", {})}
