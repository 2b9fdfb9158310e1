"""`conceptengine status RUN`: read the manifests; never recompute anything."""

from __future__ import annotations

from conceptengine.engine.round_steps import CADENCED_STEPS, ROUND_STEPS, Step
from conceptengine.engine.store import RunStore, StepRef


def run_status(run_url: str) -> dict:
    store = RunStore.existing(run_url)
    snapshot = store.read_json("run.json")
    lines = [f"run {run_url}  config {snapshot['config_hash']}"]
    ingest = store.manifest(StepRef(0, Step.INGEST))
    if ingest:
        q = ingest.get("extra", {}).get("quarantined", 0)
        lines.append(f"media: {ingest['rows']['media']} files, {q} quarantined")
        if q:
            bad = store.read_step(StepRef(0, Step.INGEST), "quarantine")
            lines += [f"  quarantined: {e}" for e in bad["error"].to_pylist()]
    summaries = []
    start = store.read_json("round-0000/summary.json")
    if start:
        summaries.append(start)
    for r in range(1, snapshot["config"]["rounds"]["count"] + 1):
        done = [s for s in ROUND_STEPS if store.manifest(StepRef(r, s))]
        if Step.EVALUATE in done:
            lines.append(f"round {r}: complete ({', '.join(done)})")
        else:
            nxt = next(s for s in ROUND_STEPS if s not in done and s not in CADENCED_STEPS)
            lines.append(f"round {r}: {len(done)} steps done, next: {nxt}")
        summary = store.read_json(f"round-{r:04d}/summary.json")
        if summary:
            summaries.append(summary)
    return {"lines": lines, "summaries": summaries}
