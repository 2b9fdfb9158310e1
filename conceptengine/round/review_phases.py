"""What people are asked about a routed pair, phase by phase, and what their answers decide: pure functions of
the pairs and the answers, so any worker holding a block of routed pairs can build its tasks or its decisions.

MV first (is this mask a good instance?), then EV on the masks that survived (is the pair exhaustive?), then
correction for pairs judged non-exhaustive. A phase's tasks depend on the answers of the phases before it, so a
worker replays those first (`replay`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conceptengine.engine import ids, rle
from conceptengine.review.types import TaskSpec

PHASES = ("mv", "ev", "correction")
EV_NEEDS_CORRECTION = {"Reject", "Reject but unseparated"}


@dataclass
class PairState:
    row: dict
    masks: list[dict] = field(default_factory=list)
    ev_choice: str | None = None  # None until decided by AI or human
    human: bool = False


def _payload(row: dict) -> dict:
    return {k: row[k] for k in ("media_id", "uri", "height", "width", "noun_phrase")}


def _task(kind: str, r: int, subject_id: str, row: dict, extra: dict) -> TaskSpec:
    return TaskSpec(
        kind=kind, round=r, subject_id=subject_id, pair_id=row["pair_id"], payload=_payload(row) | extra
    )


def _mask_payload(mask: dict) -> dict:
    return {"instance_id": mask["instance_id"], "rle": mask["rle"], "box_xyxy": list(mask["box_xyxy"])}


def mv_tasks(states: list[PairState], r: int) -> list[TaskSpec]:
    return [
        _task("mv", r, mask["instance_id"], st.row, _mask_payload(mask))
        for st in states
        for mask, how in zip(st.row["masks"], st.row["mask_routes"], strict=True)
        if how == "human"
    ]


def apply_mv(states: list[PairState], answers: dict[str, Any]) -> None:
    """`answers`: instance id -> the final MV answer's choice. Also takes EV's automatic routes, so that what
    is left undecided afterwards is what EV asks people."""
    for st in states:
        for mask, how in zip(st.row["masks"], st.row["mask_routes"], strict=True):
            if how == "accept" or (how == "human" and answers.get(mask["instance_id"]) == "Accept"):
                st.masks.append(mask)
            st.human |= how == "human"
        if st.row["ev_route"] == "accept":
            st.ev_choice = "Accept"
        elif st.row["ev_route"] == "reject":
            st.ev_choice = "Reject"


def ev_tasks(states: list[PairState], r: int) -> list[TaskSpec]:
    """After apply_mv: the pairs whose EV was routed to people, with the masks that survived MV."""
    return [
        _task("ev", r, st.row["pair_id"], st.row, {"rles": [m["rle"] for m in st.masks]})
        for st in states
        if st.ev_choice is None
    ]


def apply_ev(states: list[PairState], answers: dict[str, Any]) -> None:
    """`answers`: pair id -> the final EV answer's choice."""
    for st in states:
        if st.ev_choice is None:
            st.ev_choice = answers.get(st.row["pair_id"])
            st.human = True


def _masks_payload(masks: list[dict]) -> dict:
    return {"rles": [m["rle"] for m in masks], "instance_ids": [m["instance_id"] for m in masks]}


def correction_tasks(states: list[PairState], r: int) -> list[TaskSpec]:
    return [
        _task("correction", r, st.row["pair_id"], st.row, _masks_payload(st.masks))
        for st in states
        if st.ev_choice in EV_NEEDS_CORRECTION
    ]


def apply_corrections(states: list[PairState], answers: dict[str, Any]) -> None:
    """`answers`: pair id -> the correction's payload (masks removed and added; {} for none)."""
    for st in states:
        if st.ev_choice not in EV_NEEDS_CORRECTION:
            continue
        edit = answers.get(st.row["pair_id"])
        if edit is None:
            continue  # unanswered by the deadline: rolled over, the pair is not committed this round
        st.masks = apply_correction(st.row, st.masks, edit)
        st.ev_choice = "corrected"
        st.human = True


TASKS: dict[str, Callable[[list[PairState], int], list[TaskSpec]]] = {
    "mv": mv_tasks,
    "ev": ev_tasks,
    "correction": correction_tasks,
}
APPLY: dict[str, Callable[[list[PairState], dict[str, Any]], None]] = {
    "mv": apply_mv,
    "ev": apply_ev,
    "correction": apply_corrections,
}


def replay(
    states: list[PairState], phases: tuple[str, ...], answers: Callable[[str], dict[str, Any]]
) -> None:
    """Apply the answers of `phases` in order; `answers(kind)` gives a phase's answers by subject id."""
    for kind in phases:
        APPLY[kind](states, answers(kind))


def apply_correction(row: dict, masks: list[dict], edit: dict) -> list[dict]:
    """Remove masks by instance id or index, then append the added RLEs as new instances."""
    removed = set()
    for item in edit.get("remove", []):
        removed |= {i for i, m in enumerate(masks) if item == i or item == m["instance_id"]}
    kept = [m for i, m in enumerate(masks) if i not in removed]
    start = len(row["masks"])  # new instance indices never collide with proposed ones
    for k, counts in enumerate(edit.get("add", [])):
        kept.append(
            {
                "instance_id": ids.instance_id(row["pair_id"], start + k),
                "rle": counts,
                "box_xyxy": rle.box_xyxy(counts, row["height"], row["width"]),
                "score": 1.0,
            }
        )
    return kept


def outcome(choice: str | None) -> str | None:
    if choice in ("Accept", "corrected"):
        return "accept" if choice == "Accept" else "corrected"
    if choice is None or choice in EV_NEEDS_CORRECTION:
        return None  # still open (rolled over)
    return "flagged"  # Flag label / Whole image / Ungroundable: the NP is not usable as posed


def decisions(states: list[PairState]) -> list[dict]:
    """DECISIONS rows (round/annotations.py) of the pairs decided this round; a rolled-over pair has none."""
    rows = []
    for st in states:
        decided = outcome(st.ev_choice)
        if decided is not None:
            rows.append(
                {
                    "pair_id": st.row["pair_id"],
                    "masks": st.masks,
                    "ev_outcome": decided,
                    "human_touched": st.human,
                }
            )
    return rows
