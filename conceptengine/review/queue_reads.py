"""The review queue's read side: what is queued, what is answered, and each item's answers and ruling.

Nothing here changes the queue, so the web app's dashboard, the interop exports and the round's
HUMAN_REVIEW step may all call it at any time; every read is one short transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, func, select

from conceptengine.review.answers import KINDS, SubmissionError
from conceptengine.review.consensus import ADJUDICATE
from conceptengine.review.db import read_tx
from conceptengine.review.queue_rows import (
    ANSWER_COLS,
    QUEUE_KINDS,
    STATUSES,
    A,
    T,
    answer_of,
    check_kinds,
    chunks,
    task_of,
)
from conceptengine.review.types import AnswerRow, Item, Task


class QueueReads:
    """Read methods of ReviewQueue (its base class); `_engine` is the queue's database engine."""

    _engine: Engine

    def get(self, task_id: str) -> Task | None:
        with read_tx(self._engine) as conn:
            row = conn.execute(select(T).where(T.c.task_id == task_id)).first()
        return None if row is None else task_of(row)

    def counts(self, round: int) -> dict[str, dict[str, int]]:
        """Tasks per kind and status in `round`, every kind and status present (zeros included)."""
        out = {k: dict.fromkeys(STATUSES, 0) for k in QUEUE_KINDS}
        with read_tx(self._engine) as conn:
            rows = conn.execute(
                select(T.c.kind, T.c.status, func.count())
                .where(T.c.round == round)
                .group_by(T.c.kind, T.c.status)
            ).all()
        for kind, status, n in rows:
            out.setdefault(kind, dict.fromkeys(STATUSES, 0))[status] = int(n)
        return out

    def open_count(self, round: int, kinds: list[str] | None = None) -> int:
        """Tasks of `round` still waiting for an answer (open or leased): 0 means the round is drained."""
        query = (
            select(func.count()).select_from(T).where(T.c.round == round, T.c.status.in_(("open", "leased")))
        )
        if kinds is not None:
            query = query.where(T.c.kind.in_(check_kinds(kinds, admin=True)))
        with read_tx(self._engine) as conn:
            return int(conn.scalar(query) or 0)

    def tasks(self, round: int, kinds: list[str], statuses: Sequence[str] = ("open",)) -> list[Task]:
        """Tasks of `round` with these kinds and statuses, in lease order (e.g. to export open work)."""
        kinds = check_kinds(kinds, admin=True)
        bad = sorted(set(statuses) - set(STATUSES))
        if bad:
            raise ValueError(f"statuses: unknown {bad}; expected some of {list(STATUSES)}")
        query = (
            select(T)
            .where(T.c.round == round, T.c.kind.in_(kinds), T.c.status.in_(list(statuses)))
            .order_by(T.c.created_at, T.c.task_id)
        )
        with read_tx(self._engine) as conn:
            return [task_of(r) for r in conn.execute(query).all()]

    def answers(self, round: int, kind: str) -> list[AnswerRow]:
        """Every answer to `kind` tasks of `round`, ordered by task_id (stable across runs)."""
        check_kinds([kind], admin=True)
        query = (
            select(T, *ANSWER_COLS)
            .join(A, A.c.task_id == T.c.task_id)
            .where(T.c.round == round, T.c.kind == kind)
            .order_by(T.c.task_id)
        )
        with read_tx(self._engine) as conn:
            return [answer_of(r) for r in conn.execute(query).all()]

    def items(self, round: int, kind: str, pair_ids: Sequence[str] | None = None) -> list[Item]:
        """The `kind` items with a live task in `round` (of these pairs only, when given: a worker's block),
        each with all its answers and its adjudication.

        An item that rolled over part-answered keeps the answers given in earlier rounds.
        """
        if kind not in KINDS:
            raise SubmissionError(f"kind: items exist for {list(KINDS)}, got {kind!r}")
        live = (T.c.kind == kind, T.c.status != "rolled")
        query = select(T, *ANSWER_COLS).outerjoin(A, A.c.task_id == T.c.task_id)
        with read_tx(self._engine) as conn:
            if pair_ids is None:
                in_round = select(T.c.item_id).where(T.c.round == round, *live)
                rows = conn.execute(
                    query.where(T.c.item_id.in_(in_round), *live).order_by(T.c.item_id, T.c.replica)
                ).all()
            else:
                # An item's tasks all belong to its pair: read the pairs' live tasks (by index), then keep the
                # items with one in this round.
                found = [
                    row
                    for chunk in chunks(sorted(set(pair_ids)))
                    for row in conn.execute(query.where(T.c.pair_id.in_(chunk), *live)).all()
                ]
                in_round = {row.item_id for row in found if row.round == round}
                rows = sorted(
                    (r for r in found if r.item_id in in_round), key=lambda r: (r.item_id, r.replica)
                )
            # Only a consensus item (k > 1) can have a ruling.
            subjects = sorted({r.subject_id for r in rows if r.replicas > 1})
            rulings: dict[str, AnswerRow] = {}
            for chunk in chunks(subjects):
                for r in conn.execute(
                    select(T, *ANSWER_COLS)
                    .join(A, A.c.task_id == T.c.task_id)
                    .where(T.c.kind == ADJUDICATE, T.c.subject_id.in_(chunk))
                ).all():
                    rulings[r.payload["item_id"]] = answer_of(r)
        grouped: dict[str, list[Any]] = {}
        for r in rows:
            grouped.setdefault(r.item_id, []).append(r)
        return [
            Item(
                item_id=item,
                kind=kind,
                subject_id=group[0].subject_id,
                pair_id=group[0].pair_id,
                replicas=max(r.replicas for r in group),
                answers=tuple(answer_of(r) for r in group if r.annotator is not None),
                adjudication=rulings.get(item),
            )
            for item, group in grouped.items()
        ]
