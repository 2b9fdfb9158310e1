"""Run a step at most once: reuse its stored output when its manifest matches, else compute it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Protocol

import pyarrow as pa

from conceptengine.engine.store import RunStore, StepRef, fingerprint_of

# Called as on_step(step_rel, phase, info), phase "start", "training" or "done": drives progress displays.
StepListener = Callable[[str, str, dict], None]


class StepHost(Protocol):
    """What running a step needs of a run: where outputs go, which config they belong to, who listens."""

    store: RunStore
    config_hash: str
    on_step: StepListener | None


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
    notify = ctx.on_step or (lambda *_: None)
    if ctx.store.is_done(ref, ctx.config_hash, fingerprint):
        tables = {n: ctx.store.read_step(ref, n) for n in names}
        manifest = ctx.store.manifest(ref)
        notify(ref.rel, "done", {"reused": True, "seconds": 0.0, **_counts(manifest)})
        return StepResult(ref, tables, manifest, reused=True, store=ctx.store)
    notify(ref.rel, "start", {})
    started = time.monotonic()
    tables, extra = compute()
    missing = set(names) - set(tables)
    if missing:
        raise RuntimeError(f"step {ref.rel} produced no table(s) {sorted(missing)}")
    seconds = round(time.monotonic() - started, 2)
    manifest = ctx.store.write_step(ref, tables, ctx.config_hash, fingerprint, extra | {"seconds": seconds})
    notify(ref.rel, "done", {"reused": False, "seconds": seconds, **_counts(manifest)})
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
    notify = ctx.on_step or (lambda *_: None)
    if ctx.store.is_done(ref, ctx.config_hash, fingerprint):
        manifest = ctx.store.manifest(ref)
        notify(ref.rel, "done", {"reused": True, "seconds": 0.0, **_counts(manifest)})
        return StepResult(ref, {}, manifest, reused=True, store=ctx.store)
    notify(ref.rel, "start", {})
    started = time.monotonic()
    ctx.store.invalidate(ref)
    with ctx.store.writing(ref.rel):  # a full disk or read-only run dir on a worker: one clear error
        files, extra = stream(ctx.store.url_for(ref.rel))
    seconds = round(time.monotonic() - started, 2)
    extra |= {"seconds": seconds}
    manifest = ctx.store.write_block_step(ref, files, ctx.config_hash, fingerprint, extra, sort_by)
    notify(ref.rel, "done", {"reused": False, "seconds": seconds, **_counts(manifest)})
    return StepResult(ref, {}, manifest, reused=False, store=ctx.store)


def _counts(manifest: dict) -> dict:
    """What a progress display shows of a finished step: its tables' rows and its manifest's numbers."""
    return {"rows": manifest.get("rows", {}), "extra": manifest.get("extra", {})}
