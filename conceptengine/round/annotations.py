"""A round's decisions and what they commit: pure table functions, light enough for the workers that commit
blocks (round/commit_stage.py) as well as for HUMAN_REVIEW.

A routed pair is decided without a human when EV auto-accepted it and MV decided each of its masks; every
other pair goes to HUMAN_REVIEW, whose DECISIONS rows the commit joins back in. DECIDED is that join: what
the commit's outputs need of the routed row, plus what was decided for it (nothing yet, for a pair whose review
rolled over).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from conceptengine.engine.tables import ANNOTATIONS, MASK, VERDICTS
from conceptengine.review.answers import EV_CHOICES, MV_CHOICES
from conceptengine.verifiers.route_stage import ROUTED
from conceptengine.verifiers.routing import ACCEPT_ROUTE, needs_human

DECISIONS = pa.schema(
    [
        ("pair_id", pa.string()),
        ("masks", pa.list_(MASK)),  # the pair's final masks after MV and correction
        ("ev_outcome", pa.string()),  # accept | corrected | flagged (EV said the NP itself is bad)
        ("human_touched", pa.bool_()),
    ]
)

# What the commit's outputs need of a routed row: the committed pair's fields and, for the verifiers' verdicts,
# their scores and the proposed masks' ids (not the masks: most routed pairs are not committed this round).
KEPT = (
    "pair_id",
    "media_id",
    "uri",
    "width",
    "height",
    "noun_phrase",
    "mv_probs",
    "ev_probs",
    "verifier_version",
)
DECIDED = pa.schema(
    [ROUTED.field(name) for name in KEPT]
    + [
        ("instance_ids", pa.list_(pa.string())),  # of the proposed masks, in order
        ("decided_masks", pa.list_(MASK)),
        ("ev_outcome", pa.string()),  # null: not decided this round (its review rolled over)
        ("human_touched", pa.bool_()),
        ("commit_round", pa.int32()),
    ]
)

COMMITTED_OUTCOMES = ("accept", "corrected")  # "flagged": the NP is not usable as posed, so not committed


def decided_without_humans(routed: pa.Table) -> pa.Table:
    """DECISIONS rows of the routed pairs no human sees, as HUMAN_REVIEW would decide them: the masks MV
    auto-accepted, EV's automatic accept."""
    return _decided_by_routes(routed.filter(pc.invert(needs_human(routed))))


def _decided_by_routes(auto: pa.Table) -> pa.Table:
    rows = []
    for pair_id, masks, mask_routes in zip(
        *(auto[c].to_pylist() for c in ("pair_id", "masks", "mask_routes"))
    ):
        kept = [m for m, how in zip(masks or [], mask_routes or [], strict=True) if how == ACCEPT_ROUTE]
        rows.append({"pair_id": pair_id, "masks": kept, "ev_outcome": "accept", "human_touched": False})
    return pa.Table.from_pylist(rows, schema=DECISIONS)


def decide(routed: pa.Table, human: dict[str, dict], r: int) -> pa.Table:
    """DECIDED rows of round r: `human` holds HUMAN_REVIEW's DECISIONS rows by pair id; a pair that needs a
    person and has no decision there is left undecided."""
    people = needs_human(routed)
    by_pair = {d["pair_id"]: d for d in _decided_by_routes(routed.filter(pc.invert(people))).to_pylist()}
    masks, outcomes, touched = [], [], []
    for pair_id, to_human in zip(routed["pair_id"].to_pylist(), people.to_pylist(), strict=True):
        d = human.get(pair_id) if to_human else by_pair[pair_id]
        masks.append(d["masks"] if d else None)
        outcomes.append(d["ev_outcome"] if d else None)
        touched.append(d["human_touched"] if d else None)
    columns = {
        "instance_ids": _instance_ids(routed["masks"]),
        "decided_masks": pa.array(masks, DECIDED.field("decided_masks").type),
        "ev_outcome": pa.array(outcomes, pa.string()),
        "human_touched": pa.array(touched, pa.bool_()),
        "commit_round": pa.array([r] * routed.num_rows, pa.int32()),
    }
    kept = routed.select(list(KEPT)).cast(pa.schema([ROUTED.field(name) for name in KEPT]))
    return pa.Table.from_arrays([*kept.columns, *columns.values()], schema=DECIDED)


def _instance_ids(masks: pa.ChunkedArray) -> pa.Array:
    """Per row, its masks' instance ids (null where the masks are), without turning the masks into Python."""
    masks = masks.combine_chunks()
    ids = masks.flatten().field("instance_id")  # the values of the (possibly sliced) lists only
    offsets = pc.subtract(masks.offsets, masks.offsets[0])
    return pa.ListArray.from_arrays(offsets, ids, mask=masks.is_null())


def _committed(decided: pa.Table) -> pa.Table:
    return decided.filter(pc.is_in(decided["ev_outcome"], pa.array(COMMITTED_OUTCOMES)))


def annotation_rows(decided: pa.Table) -> pa.Table:
    """ANNOTATIONS rows of the DECIDED pairs that are committed, sorted by pair id."""
    rows = []
    for d in _committed(decided).to_pylist():
        provenance = (
            "corrected" if d["ev_outcome"] == "corrected" else ("human" if d["human_touched"] else "auto")
        )
        rows.append(
            {
                **{k: d[k] for k in ("pair_id", "media_id", "uri", "width", "height", "noun_phrase")},
                "masks": d["decided_masks"],
                "is_exhaustive": True,
                "is_negative": len(d["decided_masks"]) == 0,
                "provenance": provenance,
                "round": d["commit_round"],
            }
        )
    table = pa.Table.from_pylist(rows, schema=ANNOTATIONS)
    return table.sort_by([("pair_id", "ascending")]) if table.num_rows else table


def build_annotations(routed: pa.Table, decisions: pa.Table, r: int) -> pa.Table:
    """ANNOTATIONS of round r from its routed pairs and HUMAN_REVIEW's decisions."""
    return annotation_rows(decide(routed, {d["pair_id"]: d for d in decisions.to_pylist()}, r))


def ai_verdict_rows(decided: pa.Table) -> pa.Table:
    """The verifiers' answers as VERDICTS rows: one per proposed mask (MV) and one per pair EV scored."""
    rows = []
    cols = ("pair_id", "instance_ids", "mv_probs", "ev_probs", "verifier_version", "commit_round")
    for pair_id, instance_ids, mv_probs, ev_probs, version, r in zip(*(decided[c].to_pylist() for c in cols)):
        annotator = f"ai:{version}"
        for instance_id, probs in zip(instance_ids or [], mv_probs or [], strict=False):
            rows.append(_verdict(instance_id, pair_id, "mv", annotator, MV_CHOICES, probs, r))
        if ev_probs is not None:
            rows.append(_verdict(pair_id, pair_id, "ev", annotator, EV_CHOICES, ev_probs, r))
    return pa.Table.from_pylist(rows, schema=VERDICTS)


def _verdict(subject, pair, task, annotator, choices, probs, r) -> dict:
    return {
        "subject_id": subject,
        "pair_id": pair,
        "task": task,
        "annotator": annotator,
        "choice": choices[int(np.argmax(probs))],
        "probs": list(probs),
        "seconds": 0.0,
        "round": r,
    }


def commit_counts(decided: pa.Table) -> dict[str, int]:
    """A DECIDED block's committed negatives (pairs committed with no mask), added up by the commit step."""
    committed = _committed(decided)
    return {
        "committed_negative": int(
            pc.sum(pc.equal(pc.list_value_length(committed["decided_masks"]), 0)).as_py() or 0
        )
    }
