"""HUMAN_REVIEW: what the verifiers were unsure of goes to the durable queue, in three phases, from the workers.

MV first (is this mask a good instance?), then EV on the masks that survived (is the pair exhaustive?), then
correction for pairs judged non-exhaustive (round/review_phases.py). A block step: for each phase the workers
read ROUTE's block files, keep the pairs a person must see (verifiers/routing.py: needs_human; COMMIT decides
the rest) and enqueue their tasks (round/review_stage.py); the driver waits for the phase's queue to drain;
last, the workers turn their pairs' answers into DECISIONS blocks. The driver holds no pair, only the queue's
counts and the people's verdicts (as many as people have time for). Tasks have derived ids and answers are
stored durably, so a crash mid-step loses nothing: the step re-enqueues (a no-op for tasks already there),
waits only for what is still open and reads every answer back.

With `review.consensus_k` = k > 1 every MV and EV item is asked of k different reviewers; a phase then
also waits for the admins' rulings on the items whose reviewers disagreed, and uses for each item its
unanimous or adjudicated answer (review/consensus.py). Every individual answer is kept as a verdict.
"""

from __future__ import annotations

import time

import pyarrow as pa

from conceptengine.engine.block_files import write_block
from conceptengine.engine.round_steps import Step
from conceptengine.engine.runner import Link
from conceptengine.engine.stage import StageConfig
from conceptengine.engine.steps import StepResult, run_block_step
from conceptengine.engine.store import StepRef
from conceptengine.engine.tables import VERDICTS
from conceptengine.review.consensus import ADJUDICATE, CONSENSUS_KINDS, agreement
from conceptengine.review.queue import ReviewQueue
from conceptengine.round.annotations import DECISIONS
from conceptengine.round.context import RunContext
from conceptengine.round.review_phases import PHASES
from conceptengine.round.review_stage import ASKED, AskStage, DecideStage
from conceptengine.round.reviewers import drain

# Rows a review worker takes at once: each batch reads its pairs' answers in one query per phase.
REVIEW_BATCH_ROWS = 512


def _ask(ctx: RunContext, queue: ReviewQueue, r: int, phase: str, step_url: str, routed: StepResult) -> dict:
    """The workers enqueue one phase's tasks (k replicas for MV / EV); then wait for its answers and rulings.
    Returns the block records of what was asked (table `asked_<phase>`)."""
    k = ctx.cfg.review.consensus_k
    params = {"review_url": ctx.review_url, "round": r, "phase": phase, "consensus_k": k}
    name = f"asked_{phase}"
    files = ctx.runner.stream_chain(
        [Link(AskStage, _review_stage(ctx), params)],
        routed.urls("routed"),
        step_url,
        {name: None},
        {name: ASKED},
    )
    drain(ctx, queue, [phase], r)
    if k > 1 and phase in CONSENSUS_KINDS:
        _settle_disputes(ctx, queue, r)
    return files


def _review_stage(ctx: RunContext) -> StageConfig:
    """The round's light stages' settings (route and commit run with the verifier's too), in bigger batches."""
    cfg = ctx.cfg.verifier.stage
    return cfg.model_copy(update={"batch_size": max(cfg.batch_size, REVIEW_BATCH_ROWS)})


def _settle_disputes(ctx: RunContext, queue: ReviewQueue, r: int) -> None:
    """Disputed items wait for an admin: the run's reviewers' (the demo's simulated one), else the team's."""
    if queue.open_count(r, [ADJUDICATE]) == 0:
        return
    if ctx.sources.reviewers is not None:
        ctx.sources.reviewers.adjudicate(ctx.review_url, r)
    drain(ctx, queue, [ADJUDICATE], r)  # waits for human admins (until review.deadline_s)


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
    def stream(step_url: str):
        started = time.monotonic()
        queue = ReviewQueue(ctx.review_url)
        files = {}
        for phase in PHASES:
            files |= _ask(ctx, queue, r, phase, step_url, routed)
        params = {"review_url": ctx.review_url, "round": r}
        files |= ctx.runner.stream_chain(
            [Link(DecideStage, _review_stage(ctx), params)],
            routed.urls("routed"),
            step_url,
            {"decisions": None},
            {"decisions": DECISIONS},
        )
        verdicts = human_verdicts(queue, r)
        files["verdicts"] = [write_block(step_url, "verdicts", verdicts, keep_empty=True)]
        per_kind = {k: v for k, v in zip(*_count_kinds(verdicts), strict=True)}
        extra = {
            "human_tasks": verdicts.num_rows,
            "human_tasks_by_kind": per_kind,
            "human_seconds": round(float(sum(verdicts["seconds"].to_pylist())), 1),
            "review_wall_s": round(time.monotonic() - started, 1),
            "asked": {phase: sum(f["rows"] for f in files[f"asked_{phase}"]) for phase in PHASES},
        }
        if ctx.cfg.review.consensus_k > 1:
            extra["consensus"] = {"k": ctx.cfg.review.consensus_k} | {
                kind: agreement(queue.items(r, kind), kind) for kind in CONSENSUS_KINDS
            }
        return files, extra

    return run_block_step(
        ctx, StepRef(r, Step.HUMAN_REVIEW), [routed.fingerprint], stream, sort_by={"decisions": "pair_id"}
    )


def _count_kinds(verdicts: pa.Table) -> tuple[list[str], list[int]]:
    kinds = verdicts["task"].to_pylist()
    names = sorted(set(kinds))
    return names, [kinds.count(k) for k in names]
