"""Run a step at most once: reuse its stored output when its manifest matches, else compute it."""

from __future__ import annotations

import time
from collections.abc import Callable
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
    def __init__(self, ref: StepRef, tables: dict[str, pa.Table], manifest: dict, reused: bool):
        self.ref = ref
        self.tables = tables
        self.manifest = manifest
        self.reused = reused

    @property
    def fingerprint(self) -> str:
        return self.manifest["output_fingerprint"]

    def __getitem__(self, name: str) -> pa.Table:
        return self.tables[name]


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
        return StepResult(ref, tables, manifest, reused=True)
    notify(ref.rel, "start", {})
    started = time.monotonic()
    tables, extra = compute()
    missing = set(names) - set(tables)
    if missing:
        raise RuntimeError(f"step {ref.rel} produced no table(s) {sorted(missing)}")
    seconds = round(time.monotonic() - started, 2)
    manifest = ctx.store.write_step(ref, tables, ctx.config_hash, fingerprint, extra | {"seconds": seconds})
    notify(ref.rel, "done", {"reused": False, "seconds": seconds, **_counts(manifest)})
    return StepResult(ref, tables, manifest, reused=False)


def _counts(manifest: dict) -> dict:
    """What a progress display shows of a finished step: its tables' rows and its manifest's numbers."""
    return {"rows": manifest.get("rows", {}), "extra": manifest.get("extra", {})}
