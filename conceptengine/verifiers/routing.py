"""ROUTE: turn verifier probabilities into decisions — auto-accept, auto-reject, or ask a human.

Pure and deterministic (no model; the audit draw is a hash of the item id), so a run's routing can be
recomputed or what-if'd with other thresholds from the stored `ai_verify` output. Both verifiers are
thresholded on P(Accept). A pair's EV is decided automatically only when every one of its masks was:
if a human must look at any mask, the human also answers EV afterwards, on the masks that survived.

Thresholds are inputs here: per task (mv, ev) an accept and a reject threshold, either may be None
(no automatic decision on that side). `routing.mode: calibrated` takes them from the calibrate step
(verifiers/calibration.py); `fixed` takes them from the config.

Audit: every item (mask or pair) draws u = hash(seed, task, item id) in [0, 1). Items with
u < audit_share go to humans whatever their score. Where the thresholds would have decided such an
item automatically it is an *audit*: `mask_audit` / `ev_audit` hold the decision it checks. Because
the draw ignores the score, the drawn items are a uniform sample of all items — the only unbiased
look at the auto-decided region once thresholds exist — and `mask_calibration` / `ev_calibration`
mark every item whose human review was score-blind in this way (drawn, or a task with no thresholds
at all, where every item goes to humans): only those are calibration data for later rounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from conceptengine.engine.ids import stable_seed
from conceptengine.verifiers.choices import ACCEPT, EV, MV

ACCEPT_ROUTE, REJECT_ROUTE, HUMAN_ROUTE = "accept", "reject", "human"
ROUTES = (ACCEPT_ROUTE, REJECT_ROUTE, HUMAN_ROUTE)
TASKS = ("mv", "ev")
NEEDED = ("masks", "mv_probs", "ev_probs", "error")
ROUTE_COLUMNS = (
    ("mask_routes", pa.list_(pa.string())),
    ("ev_route", pa.string()),
    ("mask_audit", pa.list_(pa.string())),  # per mask: null, or the automatic decision a human audits
    ("ev_audit", pa.string()),
    ("mask_calibration", pa.list_(pa.bool_())),  # per mask: its human review was score-blind
    ("ev_calibration", pa.bool_()),
)


class RoutingConfig(BaseModel):
    """How routing gets its thresholds, and the audit share that always goes to humans.

    mode `calibrated` (default): per round and task, thresholds certified from human verdicts of earlier
    rounds so that auto-decided items meet `target_precision` with `confidence` (Clopper-Pearson,
    fixed-sequence testing). A threshold is tested only when at least `min_calibration_items` items
    fall in its region; without enough data everything goes to humans. mode `fixed`: the four
    thresholds below, P(Accept) >= *_accept -> auto-accept, <= *_reject -> auto-reject, between ->
    human (reject == accept leaves no human band; a probability equal to both then accepts). mode
    `human`: every item goes to humans (the all-human baseline the verifiers are measured against).

    `ev_scope`: which pairs EV may decide without a human, the same pairs its thresholds are calibrated on.
    `no_masks` (default): pairs SAM 3 proposed no mask for; there EV's score and the human's EV verdict are
    about the same picture, so the bound holds for exactly the pairs it is applied to. `decided_masks`: also
    pairs whose every mask MV decided automatically, calibrated on every pair a human answered score-blind:
    a wider population than the one it is applied to (EV scored the pair with all its proposed boxes; the
    audits then say how it holds).
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["calibrated", "fixed", "human"] = "calibrated"
    target_precision: float = Field(0.95, gt=0.0, lt=1.0)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    min_calibration_items: int = Field(100, ge=1)
    audit_share: float = Field(0.1, ge=0.0, le=1.0)
    ev_scope: Literal["no_masks", "decided_masks"] = "no_masks"
    mv_accept: float = Field(0.9, ge=0.0, le=1.0)
    mv_reject: float = Field(0.1, ge=0.0, le=1.0)
    ev_accept: float = Field(0.9, ge=0.0, le=1.0)
    ev_reject: float = Field(0.1, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> RoutingConfig:
        for task in TASKS:
            acc, rej = getattr(self, f"{task}_accept"), getattr(self, f"{task}_reject")
            if rej > acc:
                raise ValueError(f"{task}_reject ({rej}) must be <= {task}_accept ({acc})")
        return self


@dataclass(frozen=True)
class TaskThresholds:
    """One task's thresholds; None on a side means that side never decides automatically."""

    accept: float | None = None
    reject: float | None = None

    def __post_init__(self) -> None:
        for side in ("accept", "reject"):
            v = getattr(self, side)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"{side} threshold must be in [0, 1] or None, got {v}")
        if self.accept is not None and self.reject is not None and self.reject > self.accept:
            raise ValueError(f"reject threshold ({self.reject}) must be <= accept threshold ({self.accept})")

    @property
    def any(self) -> bool:
        return self.accept is not None or self.reject is not None


NO_THRESHOLDS = {t: TaskThresholds() for t in TASKS}


def fixed_thresholds(cfg: RoutingConfig) -> dict[str, TaskThresholds]:
    return {t: TaskThresholds(getattr(cfg, f"{t}_accept"), getattr(cfg, f"{t}_reject")) for t in TASKS}


def decide(p: float, th: TaskThresholds) -> str:
    """Compare in float32, as probabilities are stored: a stored 0.2 must meet a 0.2 bar."""
    p32 = np.float32(p)
    if th.accept is not None and p32 >= np.float32(th.accept):
        return ACCEPT_ROUTE
    if th.reject is not None and p32 <= np.float32(th.reject):
        return REJECT_ROUTE
    return HUMAN_ROUTE


def audit_draw(seed: int, task: str, item_id: str) -> float:
    """u in [0, 1) from the item's id alone: the same item is drawn in every re-run, in any row order."""
    return stable_seed(seed, "audit", task, item_id) / float(16**12)


@dataclass
class _Decision:
    route: str
    audit: str | None  # the automatic decision an audit checks
    calibration: bool


def _one(p: float, th: TaskThresholds, drawn: bool, forced_human: bool = False) -> _Decision:
    would = HUMAN_ROUTE if forced_human else decide(p, th)
    if drawn and would != HUMAN_ROUTE:
        return _Decision(HUMAN_ROUTE, would, True)
    return _Decision(would, None, drawn or not th.any)


def ev_in_scope(n_masks: int, any_mask_to_human: bool, scope: str) -> bool:
    """Whether EV may decide a pair with `n_masks` proposed masks without a human (RoutingConfig.ev_scope)."""
    if scope == "no_masks":
        return n_masks == 0
    if scope == "decided_masks":
        return not any_mask_to_human
    raise ValueError(f"ev_scope must be 'no_masks' or 'decided_masks', got {scope!r}")


def _route_row(
    row: dict, thresholds: Mapping[str, TaskThresholds], audit_share: float, seed: int, ev_scope: str
) -> tuple[list[_Decision], _Decision] | None:
    if row["error"] is not None or row["mv_probs"] is None or row["ev_probs"] is None:
        return None  # not verified: nothing to route (the error is reported upstream)
    n_masks = len(row["masks"] or [])
    if len(row["mv_probs"]) != n_masks:
        raise ValueError(f"pair {row.get('pair_id')}: {len(row['mv_probs'])} mv_probs for {n_masks} masks")
    i_mv, i_ev = MV.index(ACCEPT), EV.index(ACCEPT)
    masks = [
        _one(p[i_mv], thresholds["mv"], audit_draw(seed, "mv", m["instance_id"]) < audit_share)
        for m, p in zip(row["masks"] or [], row["mv_probs"], strict=True)
    ]
    in_scope = ev_in_scope(n_masks, any(m.route == HUMAN_ROUTE for m in masks), ev_scope)
    drawn = audit_draw(seed, "ev", row["pair_id"]) < audit_share
    return masks, _one(row["ev_probs"][i_ev], thresholds["ev"], drawn, forced_human=not in_scope)


def route(
    verified: pa.Table,
    thresholds: Mapping[str, TaskThresholds],
    audit_share: float = 0.0,
    seed: int = 0,
    ev_scope: str = "no_masks",
) -> pa.Table:
    """Add the ROUTE_COLUMNS (mask lists in mask order); all null on error rows. `ev_scope`: which pairs EV
    may decide (RoutingConfig.ev_scope)."""
    missing = [c for c in (*NEEDED, "pair_id") if c not in verified.column_names]
    if missing:
        raise KeyError(
            f"route needs the ai_verify output columns {missing}; table has {verified.column_names}"
        )
    if set(thresholds) != set(TASKS):
        raise ValueError(f"thresholds must be given for exactly {list(TASKS)}, got {sorted(thresholds)}")
    if not 0.0 <= audit_share <= 1.0:
        raise ValueError(f"audit_share must be in [0, 1], got {audit_share}")
    values: dict[str, list] = {name: [] for name, _ in ROUTE_COLUMNS}
    for row in verified.select(["pair_id", *NEEDED]).to_pylist():
        decided = _route_row(row, thresholds, audit_share, seed, ev_scope)
        masks, ev = decided if decided is not None else (None, None)
        values["mask_routes"].append(None if masks is None else [m.route for m in masks])
        values["mask_audit"].append(None if masks is None else [m.audit for m in masks])
        values["mask_calibration"].append(None if masks is None else [m.calibration for m in masks])
        values["ev_route"].append(None if ev is None else ev.route)
        values["ev_audit"].append(None if ev is None else ev.audit)
        values["ev_calibration"].append(None if ev is None else ev.calibration)
    out = verified
    for name, typ in ROUTE_COLUMNS:
        if name in out.column_names:  # re-routing with new thresholds replaces the old decision
            out = out.drop_columns([name])
        out = out.append_column(pa.field(name, typ), pa.array(values[name], typ))
    return out


def route_counts(table: pa.Table) -> dict[str, dict[str, int]]:
    """Per task (mv: masks, ev: pairs): auto_accepted, auto_rejected, to_human (audits included),
    audited (sent to humans only by the audit draw), and errored (not routed)."""
    cols = ("masks", "mask_routes", "ev_route", "mask_audit", "ev_audit")
    for c in cols:
        if c not in table.column_names:
            raise KeyError(f"route_counts needs column {c!r}: run route() first")
    keys = {ACCEPT_ROUTE: "auto_accepted", REJECT_ROUTE: "auto_rejected", HUMAN_ROUTE: "to_human"}
    names = ("auto_accepted", "auto_rejected", "to_human", "audited", "errored")
    counts = {t: dict.fromkeys(names, 0) for t in TASKS}
    for masks, mroutes, eroute, maudit, eaudit in zip(*(table[c].to_pylist() for c in cols)):
        if eroute is None:
            counts["ev"]["errored"] += 1
            counts["mv"]["errored"] += len(masks or [])
            continue
        counts["ev"][keys[eroute]] += 1
        counts["ev"]["audited"] += eaudit is not None
        for r, a in zip(mroutes, maudit, strict=True):
            counts["mv"][keys[r]] += 1
            counts["mv"]["audited"] += a is not None
    return counts


def human_share(counts: dict[str, dict[str, int]]) -> float | None:
    """Share of routed items (masks + pairs) a human sees in MV or EV; None when nothing was routed."""
    seen = sum(counts[t]["to_human"] for t in TASKS)
    total = sum(counts[t][k] for t in TASKS for k in ("auto_accepted", "auto_rejected", "to_human"))
    return round(seen / total, 4) if total else None


def needs_human(routed: pa.Table) -> pa.Array:
    """Per routed row: whether a person must see the pair (a mask or EV routed to humans, EV's auto-reject,
    which goes to correction, or a row that was not routed at all)."""
    ev_accepted = pc.fill_null(pc.equal(routed["ev_route"], ACCEPT_ROUTE), False)
    flat = pc.list_flatten(routed["mask_routes"])
    parents = pc.list_parent_indices(routed["mask_routes"])
    human_mask_rows = np.unique(
        parents.to_numpy()[pc.equal(flat, HUMAN_ROUTE).to_numpy(zero_copy_only=False)]
    )
    has_human_mask = np.zeros(routed.num_rows, dtype=bool)
    has_human_mask[human_mask_rows] = True
    return pc.or_(pc.invert(ev_accepted), pa.array(has_human_mask))
