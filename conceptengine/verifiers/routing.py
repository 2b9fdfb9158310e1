"""ROUTE: turn verifier probabilities into decisions — auto-accept, auto-reject, or ask a human.

Pure and deterministic (no model, no randomness), so a run's routing can be recomputed or what-if'd
with other thresholds from the stored `ai_verify` output. Both verifiers are thresholded on
P(Accept). A pair's EV is decided automatically only when every one of its masks was: if a human
must look at any mask, the human also answers EV afterwards, on the masks that survived.
Thresholds are inputs here; calibrating them (Clopper-Pearson) is a separate step.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from conceptengine.verifiers.choices import ACCEPT, EV, MV

ACCEPT_ROUTE, REJECT_ROUTE, HUMAN_ROUTE = "accept", "reject", "human"
ROUTES = (ACCEPT_ROUTE, REJECT_ROUTE, HUMAN_ROUTE)
NEEDED = ("masks", "mv_probs", "ev_probs", "error")


class RoutingConfig(BaseModel):
    """P(Accept) >= *_accept -> auto-accept; P(Accept) <= *_reject -> auto-reject; between -> human.

    reject == accept is allowed (no human band); a probability equal to both then accepts.
    """

    model_config = ConfigDict(extra="forbid")

    mv_accept: float = Field(0.9, ge=0.0, le=1.0)
    mv_reject: float = Field(0.1, ge=0.0, le=1.0)
    ev_accept: float = Field(0.9, ge=0.0, le=1.0)
    ev_reject: float = Field(0.1, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> RoutingConfig:
        for task in ("mv", "ev"):
            acc, rej = getattr(self, f"{task}_accept"), getattr(self, f"{task}_reject")
            if rej > acc:
                raise ValueError(f"{task}_reject ({rej}) must be <= {task}_accept ({acc})")
        return self


def decide(p: float, accept: float, reject: float) -> str:
    if p >= accept:
        return ACCEPT_ROUTE
    if p <= reject:
        return REJECT_ROUTE
    return HUMAN_ROUTE


def _f32(x: float) -> float:
    """Probabilities are stored as float32: compare at that precision (a stored 0.2 must meet a 0.2 bar)."""
    return float(np.float32(x))


def _routes_for_row(
    row: dict, cfg: RoutingConfig, i_mv: int, i_ev: int
) -> tuple[list[str] | None, str | None]:
    if row["error"] is not None or row["mv_probs"] is None or row["ev_probs"] is None:
        return None, None  # not verified: nothing to route (the error is reported upstream)
    n_masks = len(row["masks"] or [])
    if len(row["mv_probs"]) != n_masks:
        raise ValueError(f"pair {row.get('pair_id')}: {len(row['mv_probs'])} mv_probs for {n_masks} masks")
    mv_acc, mv_rej, ev_acc, ev_rej = (
        _f32(v) for v in (cfg.mv_accept, cfg.mv_reject, cfg.ev_accept, cfg.ev_reject)
    )
    mask_routes = [decide(_f32(p[i_mv]), mv_acc, mv_rej) for p in row["mv_probs"]]
    if HUMAN_ROUTE in mask_routes:
        return mask_routes, HUMAN_ROUTE
    return mask_routes, decide(_f32(row["ev_probs"][i_ev]), ev_acc, ev_rej)


def route(verified: pa.Table, cfg: RoutingConfig) -> pa.Table:
    """Add `mask_routes: list<string>` (in mask order) and `ev_route: string`; null on error rows."""
    missing = [c for c in NEEDED if c not in verified.column_names]
    if missing:
        raise KeyError(
            f"route needs the ai_verify output columns {missing}; table has {verified.column_names}"
        )
    i_mv, i_ev = MV.index(ACCEPT), EV.index(ACCEPT)
    cols = ["pair_id", *NEEDED] if "pair_id" in verified.column_names else list(NEEDED)
    mask_routes, ev_routes = [], []
    for row in verified.select(cols).to_pylist():
        m, e = _routes_for_row(row, cfg, i_mv, i_ev)
        mask_routes.append(m)
        ev_routes.append(e)
    out = verified
    for name, typ, values in (
        ("mask_routes", pa.list_(pa.string()), mask_routes),
        ("ev_route", pa.string(), ev_routes),
    ):
        if name in out.column_names:  # re-routing with new thresholds replaces the old decision
            out = out.drop_columns([name])
        out = out.append_column(pa.field(name, typ), pa.array(values, typ))
    return out


def route_counts(table: pa.Table) -> dict[str, dict[str, int]]:
    """Per task (mv: masks, ev: pairs): auto_accepted, auto_rejected, to_human, and errored (not routed)."""
    for c in ("mask_routes", "ev_route", "masks"):
        if c not in table.column_names:
            raise KeyError(f"route_counts needs column {c!r}: run route() first")
    keys = {ACCEPT_ROUTE: "auto_accepted", REJECT_ROUTE: "auto_rejected", HUMAN_ROUTE: "to_human"}
    counts = {t: {"auto_accepted": 0, "auto_rejected": 0, "to_human": 0, "errored": 0} for t in ("mv", "ev")}
    for masks, mroutes, eroute in zip(*(table[c].to_pylist() for c in ("masks", "mask_routes", "ev_route"))):
        if eroute is None:
            counts["ev"]["errored"] += 1
            counts["mv"]["errored"] += len(masks or [])
            continue
        counts["ev"][keys[eroute]] += 1
        for r in mroutes:
            counts["mv"][keys[r]] += 1
    return counts
