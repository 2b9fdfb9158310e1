"""HUMAN_REVIEW's work on the workers. Each stage takes a block of routed pairs, keeps the pairs a person must
see (verifiers/routing.py: needs_human), replays the answers the queue already holds for them and then either
asks the queue one phase's questions (AskStage) or turns all the answers into DECISIONS rows (DecideStage).
A worker reads only its own pairs' answers, so no step of the review holds the round's pairs in one place.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa

from conceptengine.engine.stage import Stage, StageConfig, register
from conceptengine.review.consensus import CONSENSUS_KINDS, final_answer
from conceptengine.review.queue import ReviewQueue
from conceptengine.round.annotations import DECISIONS
from conceptengine.round.review_phases import PHASES, TASKS, PairState, decisions, replay
from conceptengine.verifiers.routing import needs_human

ASKED = pa.schema([("kind", pa.string()), ("subject_id", pa.string()), ("pair_id", pa.string())])


class _ReviewStage(Stage):
    # What the tasks show and the routes that say which questions people get (ROUTE's rows have them all).
    input_columns: ClassVar[tuple[str, ...]] = (
        *("pair_id", "media_id", "uri", "height", "width", "noun_phrase"),
        *("masks", "mask_routes", "ev_route"),
    )
    runs_as_task: ClassVar[bool] = True

    def __init__(self, cfg: StageConfig, review_url: str, round: int, **params: Any):
        super().__init__(cfg, **params)
        self.review_url = review_url
        self.round = round

    def setup(self) -> None:
        self.queue = ReviewQueue(self.review_url)

    def _states(self, batch: pa.Table, phases: tuple[str, ...]) -> list[PairState]:
        """The batch's pairs a person must see, with the answers of `phases` applied."""
        self.check_input(batch)
        people = batch.filter(needs_human(batch))
        pair_ids = people["pair_id"].to_pylist()
        states = [PairState(row) for row in people.to_pylist()]
        replay(states, phases, lambda kind: self._answers(kind, pair_ids))
        return states

    def _answers(self, kind: str, pair_ids: list[str]) -> dict[str, Any]:
        """subject id -> what round r uses of its answer: the only one (k = 1), the unanimous one or the
        ruling; a correction's payload, any other phase's choice."""
        if not pair_ids:
            return {}
        final = {
            item.subject_id: answer
            for item in self.queue.items(self.round, kind, pair_ids)
            if (answer := final_answer(item)) is not None
        }
        if kind == "correction":
            return {s: a.payload or {} for s, a in final.items()}
        return {s: a.choice for s, a in final.items()}


@register
class AskStage(_ReviewStage):
    """Enqueues `phase`'s tasks of the block's pairs (k replicas for MV / EV) and returns what it asked."""

    name: ClassVar[str] = "review_ask"
    output_columns: ClassVar[tuple[str, ...]] = tuple(ASKED.names)

    def __init__(self, cfg: StageConfig, review_url: str, round: int, phase: str, consensus_k: int = 1):
        super().__init__(cfg, review_url, round)
        if phase not in PHASES:
            raise ValueError(f"phase: one of {list(PHASES)}, got {phase!r}")
        self.phase = phase
        self.replicas = consensus_k if phase in CONSENSUS_KINDS else 1

    def __call__(self, batch: pa.Table) -> pa.Table:
        states = self._states(batch, PHASES[: PHASES.index(self.phase)])
        tasks = TASKS[self.phase](states, self.round)
        self.queue.enqueue(tasks, replicas=self.replicas)  # a no-op for tasks a crashed attempt enqueued
        asked = [{"kind": t.kind, "subject_id": t.subject_id, "pair_id": t.pair_id} for t in tasks]
        return pa.Table.from_pylist(asked, schema=ASKED)


@register
class DecideStage(_ReviewStage):
    """DECISIONS rows of the block's pairs that people decided this round (a rolled-over pair has none)."""

    name: ClassVar[str] = "review_decide"
    output_columns: ClassVar[tuple[str, ...]] = tuple(DECISIONS.names)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist(decisions(self._states(batch, PHASES)), schema=DECISIONS)
