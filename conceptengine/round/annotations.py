"""A round's decisions and the annotation rows they commit: pure table functions, light enough for the
workers that commit blocks (round/commit_stage.py) as well as for the COMMIT step."""

from __future__ import annotations

import pyarrow as pa

from conceptengine.engine.tables import ANNOTATIONS, MASK
from conceptengine.verifiers.routing import ACCEPT_ROUTE, HUMAN_ROUTE

DECISIONS = pa.schema(
    [
        ("pair_id", pa.string()),
        ("masks", pa.list_(MASK)),  # the pair's final masks after MV and correction
        ("ev_outcome", pa.string()),  # accept | corrected | flagged (EV said the NP itself is bad)
        ("human_touched", pa.bool_()),
    ]
)


def decided_without_humans(routed: pa.Table) -> pa.Table:
    """DECISIONS rows of the routed pairs no human sees, as HUMAN_REVIEW decides them: the masks MV
    auto-accepted, EV's automatic accept. (An EV auto-reject still goes to human correction.)"""
    rows = []
    cols = ("pair_id", "masks", "mask_routes", "ev_route")
    for pair_id, masks, mask_routes, ev_route in zip(*(routed[c].to_pylist() for c in cols), strict=True):
        if ev_route != ACCEPT_ROUTE or HUMAN_ROUTE in (mask_routes or []):
            continue
        kept = [m for m, how in zip(masks or [], mask_routes or [], strict=True) if how == ACCEPT_ROUTE]
        rows.append({"pair_id": pair_id, "masks": kept, "ev_outcome": "accept", "human_touched": False})
    return pa.Table.from_pylist(rows, schema=DECISIONS)


def build_annotations(routed: pa.Table, decisions: pa.Table, r: int) -> pa.Table:
    by_pair = {row["pair_id"]: row for row in routed.to_pylist()}
    rows = []
    for d in decisions.to_pylist():
        if d["ev_outcome"] == "flagged":
            continue  # the NP was flagged as bad/ungroundable: not a training pair
        p = by_pair[d["pair_id"]]
        provenance = (
            "corrected" if d["ev_outcome"] == "corrected" else ("human" if d["human_touched"] else "auto")
        )
        rows.append(
            {
                "pair_id": p["pair_id"],
                "media_id": p["media_id"],
                "uri": p["uri"],
                "width": p["width"],
                "height": p["height"],
                "noun_phrase": p["noun_phrase"],
                "masks": d["masks"],
                "is_exhaustive": True,
                "is_negative": len(d["masks"]) == 0,
                "provenance": provenance,
                "round": r,
            }
        )
    table = pa.Table.from_pylist(rows, schema=ANNOTATIONS)
    return table.sort_by([("pair_id", "ascending")]) if table.num_rows else table
