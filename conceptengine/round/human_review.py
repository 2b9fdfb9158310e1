"""HUMAN_REVIEW: what the verifiers were unsure of goes to the durable queue, in three phases. Only the
pairs a person must see are read (verifiers/routing.py: needs_human); COMMIT decides the rest.

MV first (is this mask a good instance?), then EV on the masks that survived (is the pair exhaustive?),
then correction for pairs judged non-exhaustive. Each phase waits for its queue to drain. Tasks have
derived ids and answers are stored durably, so a crash mid-step loses nothing: the step re-enqueues
(a no-op for tasks already there), waits only for what is still open and reads every answer back.

With `review.consensus_k` = k > 1 every MV and EV item is asked of k different reviewers; a phase then
also waits for the admins' rulings on the items whose reviewers disagreed, and uses for each item its
unanimous or adjudicated answer (review/consensus.py). Every individual answer is kept as a verdict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow as pa

from conceptengine.engine import ids, rle
from conceptengine.engine.round_steps import Step
from conceptengine.engine.steps import StepResult, run_step
from conceptengine.engine.store import StepRef
from conceptengine.engine.tables import VERDICTS
from conceptengine.review.consensus import ADJUDICATE, CONSENSUS_KINDS, agreement, final_answer
from conceptengine.review.queue import ReviewQueue
from conceptengine.review.types import AnswerRow, TaskSpec
from conceptengine.round.annotations import DECISIONS
from conceptengine.round.context import RunContext
from conceptengine.round.reviewers import drain
from conceptengine.verifiers.routing import needs_human

EV_NEEDS_CORRECTION = {"Reject", "Reject but unseparated"}


@dataclass
class PairState:
    row: dict
    masks: list[dict] = field(default_factory=list)
    ev_choice: str | None = None  # None until decided by AI or human
    human: bool = False


def _pair_payload(row: dict) -> dict:
    return {k: row[k] for k in ("media_id", "uri", "height", "width", "noun_phrase")}


def _mask_phase(ctx: RunContext, queue: ReviewQueue, r: int, states: list[PairState]) -> None:
    tasks = []
    for st in states:
        for mask, how in zip(st.row["masks"], st.row["mask_routes"], strict=True):
            if how == "human":
                payload = _pair_payload(st.row) | {
                    "instance_id": mask["instance_id"],
                    "rle": mask["rle"],
                    "box_xyxy": list(mask["box_xyxy"]),
                }
                tasks.append(
                    TaskSpec(
                        kind="mv",
                        round=r,
                        subject_id=mask["instance_id"],
                        pair_id=st.row["pair_id"],
                        payload=payload,
                    )
                )
    _ask(ctx, queue, r, "mv", tasks)
    answers = {s: a.choice for s, a in final_answers(queue, r, "mv").items()}
    for st in states:
        for mask, how in zip(st.row["masks"], st.row["mask_routes"], strict=True):
            if how == "accept" or (how == "human" and answers.get(mask["instance_id"]) == "Accept"):
                st.masks.append(mask)
            st.human |= how == "human"


def _ev_phase(ctx: RunContext, queue: ReviewQueue, r: int, states: list[PairState]) -> None:
    tasks = []
    for st in states:
        if st.row["ev_route"] == "accept":
            st.ev_choice = "Accept"
        elif st.row["ev_route"] == "reject":
            st.ev_choice = "Reject"
        else:
            payload = _pair_payload(st.row) | {"rles": [m["rle"] for m in st.masks]}
            tasks.append(
                TaskSpec(
                    kind="ev",
                    round=r,
                    subject_id=st.row["pair_id"],
                    pair_id=st.row["pair_id"],
                    payload=payload,
                )
            )
    _ask(ctx, queue, r, "ev", tasks)
    answers = {s: a.choice for s, a in final_answers(queue, r, "ev").items()}
    for st in states:
        if st.ev_choice is None:
            st.ev_choice = answers.get(st.row["pair_id"])
            st.human = True


def _correction_phase(ctx: RunContext, queue: ReviewQueue, r: int, states: list[PairState]) -> None:
    todo = [st for st in states if st.ev_choice in EV_NEEDS_CORRECTION]
    tasks = [
        TaskSpec(
            kind="correction",
            round=r,
            subject_id=st.row["pair_id"],
            pair_id=st.row["pair_id"],
            payload=_pair_payload(st.row)
            | {"rles": [m["rle"] for m in st.masks], "instance_ids": [m["instance_id"] for m in st.masks]},
        )
        for st in todo
    ]
    _ask(ctx, queue, r, "correction", tasks)
    answers = {s: a.payload or {} for s, a in final_answers(queue, r, "correction").items()}
    for st in todo:
        edit = answers.get(st.row["pair_id"])
        if edit is None:
            continue  # unanswered by the deadline: rolled over, the pair is not committed this round
        st.masks = apply_correction(st.row, st.masks, edit)
        st.ev_choice = "corrected"
        st.human = True


def _ask(ctx: RunContext, queue: ReviewQueue, r: int, kind: str, tasks: list[TaskSpec]) -> None:
    """Enqueue one phase's tasks (k replicas for MV / EV) and wait for its answers and rulings."""
    k = ctx.cfg.review.consensus_k if kind in CONSENSUS_KINDS else 1
    queue.enqueue(tasks, replicas=k)
    drain(ctx, queue, [kind], r)
    if k > 1:
        _settle_disputes(ctx, queue, r)


def _settle_disputes(ctx: RunContext, queue: ReviewQueue, r: int) -> None:
    """Disputed items wait for an admin: the run's reviewers' (the demo's simulated one), else the team's."""
    if queue.open_count(r, [ADJUDICATE]) == 0:
        return
    if ctx.sources.reviewers is not None:
        ctx.sources.reviewers.adjudicate(ctx.review_url, r)
    drain(ctx, queue, [ADJUDICATE], r)  # waits for human admins (until review.deadline_s)


def final_answers(queue: ReviewQueue, r: int, kind: str) -> dict[str, AnswerRow]:
    """subject_id -> the answer round r uses: the only one (k = 1), the unanimous one or the ruling."""
    return {item.subject_id: a for item in queue.items(r, kind) if (a := final_answer(item)) is not None}


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


def _outcome(choice: str | None) -> str | None:
    if choice in ("Accept", "corrected"):
        return "accept" if choice == "Accept" else "corrected"
    if choice is None or choice in EV_NEEDS_CORRECTION:
        return None  # still open (rolled over)
    return "flagged"  # Flag label / Whole image / Ungroundable: the NP is not usable as posed


def human_verdicts(queue: ReviewQueue, r: int) -> pa.Table:
    """Every human answer of round r; an admin's ruling is a verdict on the question it settled.

    Rulings come after all reviewers' answers, so readers that keep a subject's last verdict
    (calibration) see the final answer of a disputed item.
    """
    answers = [(kind, a) for kind in ("mv", "ev", "correction") for a in queue.answers(r, kind)]
    for kind in CONSENSUS_KINDS:
        for item in queue.items(r, kind):
            if item.adjudication is not None and item.adjudication.round == r:
                answers.append((kind, item.adjudication))
    rows = [
        {
            "subject_id": a.subject_id,
            "pair_id": a.pair_id,
            "task": kind,
            "annotator": a.annotator,
            "choice": a.choice,
            "probs": None,
            "seconds": a.seconds,
            "round": r,
        }
        for kind, a in answers
    ]
    return pa.Table.from_pylist(rows, schema=VERDICTS)


def human_review(ctx: RunContext, r: int, routed: StepResult) -> StepResult:
    def compute():
        started = time.monotonic()
        queue = ReviewQueue(ctx.review_url)
        # Only the pairs people must see: the commit decides the others from their routes.
        states = [PairState(row) for row in routed.read("routed", needs_human).to_pylist()]
        _mask_phase(ctx, queue, r, states)
        _ev_phase(ctx, queue, r, states)
        _correction_phase(ctx, queue, r, states)
        decisions = []
        for st in states:
            outcome = _outcome(st.ev_choice)
            if outcome is not None:
                decisions.append(
                    {
                        "pair_id": st.row["pair_id"],
                        "masks": st.masks,
                        "ev_outcome": outcome,
                        "human_touched": st.human,
                    }
                )
        verdicts = human_verdicts(queue, r)
        per_kind = {k: v for k, v in zip(*_count_kinds(verdicts), strict=True)}
        extra = {
            "human_tasks": verdicts.num_rows,
            "human_tasks_by_kind": per_kind,
            "human_seconds": round(float(sum(verdicts["seconds"].to_pylist())), 1),
            "review_wall_s": round(time.monotonic() - started, 1),
        }
        if ctx.cfg.review.consensus_k > 1:
            extra["consensus"] = {"k": ctx.cfg.review.consensus_k} | {
                kind: agreement(queue.items(r, kind), kind) for kind in CONSENSUS_KINDS
            }
        return {"decisions": pa.Table.from_pylist(decisions, schema=DECISIONS), "verdicts": verdicts}, extra

    return run_step(
        ctx, StepRef(r, Step.HUMAN_REVIEW), [routed.fingerprint], ["decisions", "verdicts"], compute
    )


def _count_kinds(verdicts: pa.Table) -> tuple[list[str], list[int]]:
    kinds = verdicts["task"].to_pylist()
    names = sorted(set(kinds))
    return names, [kinds.count(k) for k in names]
