"""`conceptengine status RUN`: read the manifests; never recompute anything."""

from __future__ import annotations

from conceptengine.engine.store import RunStore, StepRef

# In order; retrain, promote and retrain_verifiers run only on their cadences.
ROUND_STEPS = (
    "propose_nps", "propose_masks", "ai_verify", "calibrate", "route", "human_review", "commit",
    "retrain", "promote", "retrain_verifiers", "evaluate",
)  # fmt: skip
OPTIONAL = ("retrain", "promote", "retrain_verifiers")


def run_status(run_url: str) -> dict:
    store = RunStore.existing(run_url)
    snapshot = store.read_json("run.json")
    lines = [f"run {run_url}  config {snapshot['config_hash']}"]
    ingest = store.manifest(StepRef(0, "ingest"))
    if ingest:
        q = ingest.get("extra", {}).get("quarantined", 0)
        lines.append(f"media: {ingest['rows']['media']} files, {q} quarantined")
        if q:
            bad = store.read_step(StepRef(0, "ingest"), "quarantine")
            lines += [f"  quarantined: {e}" for e in bad["error"].to_pylist()]
    summaries = []
    start = store.read_json("round-0000/summary.json")
    if start:
        summaries.append(start)
    for r in range(1, snapshot["config"]["rounds"]["count"] + 1):
        done = [s for s in ROUND_STEPS if store.manifest(StepRef(r, s))]
        if "evaluate" in done:
            lines.append(f"round {r}: complete ({', '.join(done)})")
        else:
            nxt = next(s for s in ROUND_STEPS if s not in done and s not in OPTIONAL)
            lines.append(f"round {r}: {len(done)} steps done, next: {nxt}")
        summary = store.read_json(f"round-{r:04d}/summary.json")
        if summary:
            summaries.append(summary)
    return {"lines": lines, "summaries": summaries}
