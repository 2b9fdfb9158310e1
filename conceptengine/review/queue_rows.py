"""Shared by the queue's write and read sides: its tables, kinds, and rows turned into plain values."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, select

from conceptengine.engine import ids
from conceptengine.review.answers import KINDS, SubmissionError
from conceptengine.review.consensus import ADJUDICATE
from conceptengine.review.models import AnswerRecord, ClaimRecord, TaskRecord
from conceptengine.review.types import AnswerRow, Task

STATUSES: tuple[str, ...] = ("open", "leased", "done", "rolled")
#: Every kind the queue holds: the reviewers' kinds plus the admins' adjudications.
QUEUE_KINDS: tuple[str, ...] = KINDS + (ADJUDICATE,)
T = TaskRecord.__table__
A = AnswerRecord.__table__
C = ClaimRecord.__table__
CHUNK = 500
MAX_HOPS = 1000  # a roll-over chain longer than this is corrupt, not a queue that ran 1000 rounds late
# Labelled: tasks and answers both have a `payload` column.
ANSWER_COLS = (A.c.annotator, A.c.choice, A.c.payload.label("answer_payload"), A.c.seconds)
_TASK = select(T).where(T.c.task_id == bindparam("tid"))  # built once: every answer and page reads it


def replica_task_id(subject_id: str, kind: str, round_index: int, replica: int = 0) -> str:
    """Replica 0 keeps the single-answer id (ids.task_id), so k = 1 queues are unchanged by consensus."""
    return ids.task_id(subject_id, kind if replica == 0 else f"{kind}#{replica}", round_index)


def check_kinds(kinds: Any, admin: bool) -> list[str]:
    if isinstance(kinds, str) or not isinstance(kinds, (list, tuple)) or not kinds:
        raise ValueError(
            f"kinds: must be a non-empty list of task kinds from {list(QUEUE_KINDS)}, got {kinds!r}"
        )
    for k in kinds:
        if k not in QUEUE_KINDS:
            raise SubmissionError(f"kinds: unknown task kind {k!r}; expected one of {list(QUEUE_KINDS)}")
    if ADJUDICATE in kinds and not admin:
        raise SubmissionError(f"kinds: {ADJUDICATE!r} tasks are for admins only (pass admin=True for one)")
    return list(kinds)


def chunks(items: Sequence[str], n: int = CHUNK) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def task_of(row: Any) -> Task:
    return Task(
        task_id=row.task_id,
        round=row.round,
        kind=row.kind,
        subject_id=row.subject_id,
        pair_id=row.pair_id,
        payload=row.payload,
        status=row.status,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        attempts=row.attempts,
        created_at=row.created_at,
        item_id=row.item_id,
        replica=row.replica,
        replicas=row.replicas,
    )


def live_task(conn: Connection, task_id: str) -> Task | None:
    """The task an answer to `task_id` lands on: itself, or the live end of its roll-over chain (a task
    left unanswered at a round's deadline points at its successor). None when there is no such task."""
    current = task_id
    for _ in range(MAX_HOPS):
        row = conn.execute(_TASK, {"tid": current}).first()
        if row is None:
            return None
        if row.status != "rolled" or row.rolled_to is None:
            return task_of(row)
        current = row.rolled_to
    raise SubmissionError(f"task_id: roll-over chain of {task_id!r} does not end")  # pragma: no cover


def answer_of(row: Any) -> AnswerRow:
    return AnswerRow(
        task_id=row.task_id,
        subject_id=row.subject_id,
        pair_id=row.pair_id,
        annotator=row.annotator,
        choice=row.choice,
        payload=row.answer_payload,
        seconds=float(row.seconds),
        item_id=row.item_id,
        round=row.round,
    )
