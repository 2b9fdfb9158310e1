"""CALIBRATE (first in a round, so ROUTE can stream behind AI_VERIFY): per task, thresholds certified on the
human verdicts of earlier rounds.

Calibration data are the items of rounds 1..r-1 that a human reviewed *score-blind* — every item of a
task that had no thresholds yet (round 1 sends everything to humans), plus the audit draw afterwards
(see verifiers/routing.py) — and that were scored as this round scores them. Items a human saw only
because their score fell in the uncertain band are left out: they over-represent the band, and a
bound over them would not describe the auto-decided region. Items scored by another checkpoint of their
task are left out too: their scores mean something else, and a retrained verifier may have been trained on
exactly those verdicts, which would flatter it. A new checkpoint therefore starts with no data and sends its
task's items to humans for a round — the safe side. The match is per task (the checkpoints each round's
ai_verify step records; for a served verifier, its model names): promoting a new MV leaves EV's data as it
was.

Labels: a human accepts an item when the choice is "Accept" (MV: the mask is a good instance; EV: the
pair is exhaustive as shown). Every other choice counts as a reject, because it is what the automatic
decision on the other side does: an auto-rejected mask is dropped like any non-Accept MV answer, and an
auto-rejected EV pair is not committed as exhaustive.

EV's data are the score-blind pairs of the population routing lets EV decide (`routing.ev_scope`): by
default the pairs with no proposed mask, so the bound is over exactly the pairs it is applied to. With
`decided_masks` they are all score-blind pairs, while EV then decides only pairs whose masks were all
decided automatically: a wider population than the one it is applied to. The audits of auto-decided
items are exactly that population; their agreement is reported in the manifest (`audit`) every round.

Recomputed every round over all data so far; deterministic in the stored inputs, so resumable.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from conceptengine.engine.round_steps import Step
from conceptengine.engine.steps import StepResult, run_step
from conceptengine.engine.store import StepRef
from conceptengine.round.context import RunContext, RunError
from conceptengine.verifiers.calibration import ACCEPT_SIDE, REJECT_SIDE, Bound, assess, calibrate
from conceptengine.verifiers.choices import ACCEPT, EV, MV
from conceptengine.verifiers.routing import TASKS, TaskThresholds, ev_in_scope, fixed_thresholds

DATA = pa.schema(
    [
        ("task", pa.string()),  # mv | ev
        ("subject_id", pa.string()),  # instance_id (mv) or pair_id (ev)
        ("round", pa.int32()),
        ("p_accept", pa.float32()),
        ("accepted", pa.bool_()),  # the human's choice was "Accept"
        ("audit", pa.string()),  # the automatic decision this item audited, if it was an audit
        ("verifier_version", pa.string()),
    ]
)

THRESHOLDS = pa.schema(
    [
        ("task", pa.string()),
        ("side", pa.string()),  # accept | reject
        ("threshold", pa.float64()),  # null: no automatic decision on this side
        ("n", pa.int64()),
        ("k", pa.int64()),
        ("precision", pa.float64()),
        ("bound", pa.float64()),  # one-sided Clopper-Pearson lower bound at `confidence`
        ("calibration_items", pa.int64()),
        ("target", pa.float64()),
        ("confidence", pa.float64()),
        ("mode", pa.string()),
    ]
)

# What calibration reads from an earlier round's routed table (not the masks' pixels beyond their ids).
ROUTED_COLUMNS = [
    "pair_id", "round", "masks", "mv_probs", "ev_probs", "verifier_version",
    "mask_calibration", "ev_calibration", "mask_audit", "ev_audit",
]  # fmt: skip


def _answers(verdicts: pa.Table) -> dict[tuple[str, str], bool]:
    """(task, subject_id) -> the human accepted. A subject answered twice keeps its last answer."""
    cols = (verdicts[c].to_pylist() for c in ("task", "subject_id", "choice"))
    return {(task, subject): choice == ACCEPT for task, subject, choice in zip(*cols) if task in TASKS}


def calibration_items(routed: pa.Table, verdicts: pa.Table, ev_scope: str = "no_masks") -> pa.Table:
    """Join routed items (with their probabilities) to human verdicts; keep score-blind reviews only, and of
    EV's only the pairs of `ev_scope` (routing.ev_in_scope; a pair's MV routes do not matter here: every
    score-blind pair of `decided_masks` is kept)."""
    answers = _answers(verdicts)
    i_mv, i_ev = MV.index(ACCEPT), EV.index(ACCEPT)
    rows = []
    for row in routed.select(ROUTED_COLUMNS).to_pylist():
        if row["ev_calibration"] is None:
            continue  # not verified, so never routed
        base = {"round": row["round"], "verifier_version": row["verifier_version"]}
        mask_items = zip(
            row["masks"], row["mv_probs"], row["mask_calibration"], row["mask_audit"], strict=True
        )
        candidates = [
            ("mv", mask["instance_id"], probs[i_mv], audit)
            for mask, probs, blind, audit in mask_items
            if blind
        ]
        if row["ev_calibration"] and ev_in_scope(len(row["masks"] or []), False, ev_scope):
            candidates.append(("ev", row["pair_id"], row["ev_probs"][i_ev], row["ev_audit"]))
        for task, subject, p, audit in candidates:
            if (task, subject) in answers:  # unanswered (rolled over past the deadline): no label yet
                rows.append(
                    base
                    | {"task": task, "subject_id": subject, "p_accept": p, "audit": audit}
                    | {"accepted": answers[(task, subject)]}
                )
    table = pa.Table.from_pylist(rows, schema=DATA)
    return table.sort_by([("task", "ascending"), ("subject_id", "ascending")]) if rows else table


def _inputs(ctx: RunContext, r: int) -> list[tuple[StepRef, str]]:
    """The route and human_review outputs of rounds 1..r-1, with their fingerprints (the step's inputs)."""
    found = []
    for k in range(1, r):
        for step in (Step.ROUTE, Step.HUMAN_REVIEW):
            manifest = ctx.store.manifest(StepRef(k, step))
            if manifest is None:
                raise RunError(f"calibrate round {r}: round {k} has no finished {step} step; resume the run")
            found.append((StepRef(k, step), manifest["output_fingerprint"]))
    return found


def gather(ctx: RunContext, r: int) -> pa.Table:
    """All calibration items of rounds before r (every verifier version; the caller filters)."""
    refs = [ref for ref, _ in _inputs(ctx, r)]
    if not refs:
        return DATA.empty_table()
    verdicts = pa.concat_tables(
        [
            ctx.store.read_step(ref, "verdicts", ["task", "subject_id", "pair_id", "choice"])
            for ref in refs
            if ref.step == Step.HUMAN_REVIEW
        ]
    )
    # Only the routed pairs people answered about (the rest have no label): file by file, never whole rounds.
    seen = pc.unique(verdicts["pair_id"])
    routed = pa.concat_tables(
        [
            ctx.store.read_step(
                ref, "routed", ROUTED_COLUMNS, where=lambda t: pc.is_in(t["pair_id"], value_set=seen)
            )
            for ref in refs
            if ref.step == Step.ROUTE
        ]
    )
    return calibration_items(routed, verdicts, ctx.cfg.routing.ev_scope)


def _bounds(ctx: RunContext, data: pa.Table, task: str) -> tuple[Bound, Bound]:
    cfg = ctx.cfg.routing
    rows = data.filter(pc.equal(data["task"], task))
    p = rows["p_accept"].to_numpy(zero_copy_only=False).astype(np.float64)
    y = rows["accepted"].to_numpy(zero_copy_only=False).astype(bool)
    delta = 1.0 - cfg.confidence
    if cfg.mode == "human":  # the all-human baseline: no automatic decision on either side
        return assess(p, y, None, ACCEPT_SIDE, delta), assess(p, y, None, REJECT_SIDE, delta)
    if cfg.mode == "fixed":
        fixed = fixed_thresholds(cfg)[task]
        return assess(p, y, fixed.accept, ACCEPT_SIDE, delta), assess(p, y, fixed.reject, REJECT_SIDE, delta)
    found = calibrate(p, y, target=cfg.target_precision, delta=delta, min_items=cfg.min_calibration_items)
    return found.accept, found.reject


def _audit_results(data: pa.Table) -> dict[str, dict[str, int]]:
    """How often the human agreed with the automatic decision an audit checked (all data so far)."""
    out = {t: {"audited": 0, "agreed": 0} for t in TASKS}
    for task, audit, accepted in zip(*(data[c].to_pylist() for c in ("task", "audit", "accepted"))):
        if audit is not None:
            out[task]["audited"] += 1
            out[task]["agreed"] += (audit == "accept") == accepted
    return out


def _threshold_rows(ctx: RunContext, data: pa.Table) -> tuple[list[dict], dict, dict]:
    cfg = ctx.cfg.routing
    rows, chosen, counts = [], {}, {}
    for task in TASKS:
        accept, reject = _bounds(ctx, data, task)
        counts[task] = int(pc.sum(pc.equal(data["task"], task)).as_py() or 0)
        chosen[task] = {"accept": accept.threshold, "reject": reject.threshold}
        settings = {"task": task, "calibration_items": counts[task], "mode": cfg.mode}
        settings |= {"target": cfg.target_precision, "confidence": cfg.confidence}
        rows += [b.as_dict() | settings for b in (accept, reject)]
    return rows, chosen, counts


def _verifiers(manifest: dict | None) -> dict[str, str] | None:
    """task -> what an ai_verify step scored it with (its manifest's `verifiers`), None if unknown."""
    found = ((manifest or {}).get("extra") or {}).get("verifiers") or []
    return dict(zip(TASKS, found, strict=True)) if len(found) == len(TASKS) else None


def scored_alike(ctx: RunContext, r: int, items: pa.Table, verifiers: list[str]) -> pa.Array:
    """Per calibration item: was it scored by what round r scores its task with (`verifiers`, per task; see
    the module docstring)? An item of a round that recorded no verifiers cannot say, and is left out."""
    now = dict(zip(TASKS, verifiers, strict=True))
    then = {k: _verifiers(ctx.store.manifest(StepRef(k, Step.AI_VERIFY))) for k in range(1, r)}
    keep = []
    for task, k in zip(items["task"].to_pylist(), items["round"].to_pylist(), strict=True):
        past = then.get(k)
        keep.append(past is not None and past[task] == now[task])
    return pa.array(keep, pa.bool_())


def calibrate_round(ctx: RunContext, r: int, verifiers: list[str]) -> StepResult:
    """Writes `thresholds` (one row per task and side) and `data` (the calibration items) for round r, whose
    items `verifiers` (per task: ai_verify.round_verifiers) will score. It runs before the round's first step:
    what it needs is earlier rounds' answers, so routing can stream right behind verification."""
    inputs = _inputs(ctx, r)

    def compute():
        items = gather(ctx, r)
        data = items.filter(scored_alike(ctx, r, items, verifiers))
        rows, chosen, counts = _threshold_rows(ctx, data)
        extra = {
            "mode": ctx.cfg.routing.mode,
            "thresholds": chosen,
            "calibration_items": counts,
            "other_version_items": items.num_rows - data.num_rows,
            "audit": _audit_results(data),
            "verifiers": verifiers,
        }
        return {"thresholds": pa.Table.from_pylist(rows, schema=THRESHOLDS), "data": data}, extra

    fingerprints = [*verifiers, *(fp for _, fp in inputs)]
    return run_step(ctx, StepRef(r, Step.CALIBRATE), fingerprints, ["thresholds", "data"], compute)


def thresholds_of(calibrated: StepResult) -> dict[str, TaskThresholds]:
    """The thresholds ROUTE applies, read back from the calibrate step's table."""
    found: dict[str, dict[str, float | None]] = {t: {} for t in TASKS}
    for row in calibrated["thresholds"].to_pylist():
        found[row["task"]][row["side"]] = row["threshold"]
    return {t: TaskThresholds(found[t].get("accept"), found[t].get("reject")) for t in TASKS}
