"""The durable review queue: tasks with leases, answered exactly once.

Why this shape:
- Crash safety. Task ids are derived from (subject, kind, round), so the engine can re-enqueue a whole
  round after a crash and nothing is added twice; an answer is committed in the same transaction that
  closes its task, so an accepted answer is never lost and never doubled.
- Leases, not locks. A reviewer (a person in the web app, a simulated Ray actor) claims tasks for
  `ttl_s` seconds; if it dies, the lease runs out and another reviewer gets the task. Claims are
  compare-and-set updates (`... WHERE status is claimable`), so two workers never hold one task, on
  SQLite (where write transactions also take the lock up front) as on Postgres.
- First answer wins. Leases only avoid duplicated work; correctness comes from the unique answer per
  task. A late answer from a worker whose lease expired is still taken if nobody answered yet: that
  human work is real and should not be thrown away.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self

from sqlalchemy import Connection, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from conceptengine.engine import ids
from conceptengine.review.choices import KINDS, SubmissionError, check_answer, check_kind
from conceptengine.review.db import make_engine, read_tx, write_tx
from conceptengine.review.models import AnswerRecord, Base, TaskRecord
from conceptengine.review.types import AnswerRow, SubmitResult, Task, TaskSpec

__all__ = ["STATUSES", "AnswerRow", "ReviewQueue", "SubmissionError", "SubmitResult", "Task", "TaskSpec"]

STATUSES: tuple[str, ...] = ("open", "leased", "done", "rolled")
_T = TaskRecord.__table__
_A = AnswerRecord.__table__
_CHUNK = 500


def _chunks(items: Sequence[str], n: int = _CHUNK) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _canonical(kind: str, payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """One stored form per answer, so 'the same answer again' compares equal however it was spelled."""
    if kind == "correction":
        p = dict(payload or {})
        return {"add": list(p.get("add", [])), "remove": list(p.get("remove", []))}
    return dict(payload) if payload else None


def _same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _task(row: Any) -> Task:
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
    )


def _check_worker(worker_id: Any) -> None:
    if not isinstance(worker_id, str) or not worker_id.strip():
        raise SubmissionError(f"worker_id: must be a non-empty string, got {worker_id!r}")


class ReviewQueue:
    """Durable task queue at `url` (a SQLAlchemy URL, or a file path meaning SQLite, e.g. RUN/review.db).

    `clock` returns seconds since the epoch; tests inject one to expire leases without sleeping.
    """

    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self._clock = clock
        self._engine = make_engine(url)
        self._create_schema()

    def _create_schema(self) -> None:
        # Under the write lock, so two processes opening a fresh file don't both try to create tables.
        for attempt in range(3):
            try:
                with write_tx(self._engine) as conn:
                    Base.metadata.create_all(conn)
                return
            except OperationalError:
                if attempt == 2:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing tasks ---------------------------------------------------------------------------

    def enqueue(self, tasks: Sequence[TaskSpec]) -> int:
        """Add the tasks not already present; returns how many were new (0 when re-run after a crash)."""
        unique: dict[str, TaskSpec] = {}
        for i, spec in enumerate(tasks):
            if not isinstance(spec, TaskSpec):
                raise SubmissionError(f"tasks[{i}]: must be a TaskSpec, got {type(spec).__name__}")
            unique.setdefault(spec.task_id, spec)
        if not unique:
            return 0
        now = self._clock()
        with write_tx(self._engine) as conn:
            existing: set[str] = set()
            for chunk in _chunks(list(unique)):
                existing.update(conn.scalars(select(_T.c.task_id).where(_T.c.task_id.in_(chunk))))
            rows = [
                {
                    "task_id": tid,
                    "round": s.round,
                    "kind": s.kind,
                    "subject_id": s.subject_id,
                    "pair_id": s.pair_id,
                    "payload": s.payload,
                    "status": "open",
                    "attempts": 0,
                    "created_at": now,
                }
                for tid, s in unique.items()
                if tid not in existing
            ]
            if rows:
                conn.execute(_T.insert(), rows)
        return len(rows)

    def roll_over(self, from_round: int, to_round: int) -> int:
        """Carry tasks left unanswered at a round's deadline into `to_round`; returns how many moved.

        The old task is marked `rolled` and points at its successor, so a late answer to it still lands.
        """
        if not isinstance(to_round, int) or not isinstance(from_round, int) or to_round <= from_round:
            raise ValueError(
                f"to_round: must be an integer after from_round={from_round!r}, got {to_round!r}"
            )
        now = self._clock()
        with write_tx(self._engine) as conn:
            left = conn.execute(
                select(_T).where(_T.c.round == from_round, _T.c.status.in_(("open", "leased")))
            ).all()
            for row in left:
                new_id = ids.task_id(row.subject_id, row.kind, to_round)
                if conn.scalar(select(_T.c.task_id).where(_T.c.task_id == new_id)) is None:
                    conn.execute(
                        _T.insert(),
                        {
                            "task_id": new_id,
                            "round": to_round,
                            "kind": row.kind,
                            "subject_id": row.subject_id,
                            "pair_id": row.pair_id,
                            "payload": row.payload,
                            "status": "open",
                            "attempts": 0,
                            "created_at": now,
                        },
                    )
                conn.execute(
                    update(_T)
                    .where(_T.c.task_id == row.task_id)
                    .values(status="rolled", rolled_to=new_id, lease_owner=None, lease_expires_at=None)
                )
        return len(left)

    # -- leasing ---------------------------------------------------------------------------------

    def lease(
        self, worker_id: str, kinds: list[str], n: int, ttl_s: float, round: int | None = None
    ) -> list[Task]:
        """Claim up to `n` open (or lease-expired) tasks of `kinds` for `ttl_s` seconds."""
        _check_worker(worker_id)
        if isinstance(kinds, str) or not kinds:
            raise ValueError(
                f"kinds: must be a non-empty list of task kinds from {list(KINDS)}, got {kinds!r}"
            )
        for k in kinds:
            check_kind(k, field="kinds")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n: must be a non-negative integer, got {n!r}")
        if not isinstance(ttl_s, (int, float)) or not math.isfinite(ttl_s) or ttl_s <= 0:
            raise ValueError(f"ttl_s: must be a positive number of seconds, got {ttl_s!r}")
        if n == 0:
            return []
        now = self._clock()
        claimable = or_(_T.c.status == "open", and_(_T.c.status == "leased", _T.c.lease_expires_at <= now))
        query = select(_T.c.task_id).where(_T.c.kind.in_(list(kinds)), claimable)
        if round is not None:
            query = query.where(_T.c.round == round)
        query = query.order_by(_T.c.round, _T.c.created_at, _T.c.task_id).limit(n)
        with write_tx(self._engine) as conn:
            candidates = list(conn.scalars(query.with_for_update(skip_locked=True)))
            claimed = [tid for tid in candidates if self._claim(conn, tid, claimable, worker_id, now + ttl_s)]
            rows = conn.execute(select(_T).where(_T.c.task_id.in_(claimed))).all() if claimed else []
        by_id = {r.task_id: _task(r) for r in rows}
        return [by_id[t] for t in claimed]

    @staticmethod
    def _claim(conn: Connection, task_id: str, claimable: Any, worker_id: str, expires: float) -> bool:
        res = conn.execute(
            update(_T)
            .where(_T.c.task_id == task_id, claimable)
            .values(
                status="leased", lease_owner=worker_id, lease_expires_at=expires, attempts=_T.c.attempts + 1
            )
        )
        return res.rowcount == 1

    # -- answering -------------------------------------------------------------------------------

    def submit(
        self,
        task_id: str,
        worker_id: str,
        choice: str,
        payload: dict[str, Any] | None = None,
        seconds: float = 0.0,
    ) -> SubmitResult:
        """Record `worker_id`'s answer. Malformed input raises SubmissionError naming the field."""
        _check_worker(worker_id)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise SubmissionError(f"seconds: must be a finite number, got {seconds!r}")
        if seconds < 0:
            raise SubmissionError(f"seconds: must be >= 0, got {seconds!r}")
        with read_tx(self._engine) as conn:
            task = self._resolve(conn, task_id)
        check_answer(task.kind, task.payload, choice, payload)
        stored = _canonical(task.kind, payload)
        for attempt in range(2):
            try:
                return self._record(task.task_id, task.kind, worker_id, choice, stored, float(seconds))
            except IntegrityError:
                if attempt == 1:  # pragma: no cover - needs a concurrent writer on a non-locking backend
                    raise
        raise AssertionError("unreachable")

    def _resolve(self, conn: Connection, task_id: str) -> Task:
        """The task an answer to `task_id` belongs to, following roll-overs to the live successor."""
        if not isinstance(task_id, str):
            raise SubmissionError(f"task_id: must be a string, got {task_id!r}")
        current = task_id
        for _ in range(1000):
            row = conn.execute(select(_T).where(_T.c.task_id == current)).first()
            if row is None:
                raise SubmissionError(f"task_id: no task {current!r} in the review queue")
            if row.status != "rolled" or row.rolled_to is None:
                return _task(row)
            current = row.rolled_to
        raise SubmissionError(f"task_id: roll-over chain of {task_id!r} does not end")  # pragma: no cover

    def _record(
        self,
        task_id: str,
        kind: str,
        worker_id: str,
        choice: str,
        payload: dict[str, Any] | None,
        seconds: float,
    ) -> SubmitResult:
        now = self._clock()
        with write_tx(self._engine) as conn:
            prior = conn.execute(select(_A).where(_A.c.task_id == task_id)).first()
            if prior is not None:
                same = prior.choice == choice and _same(prior.payload, payload)
                return SubmitResult(
                    task_id=task_id,
                    status="duplicate" if same else "conflict",
                    existing_choice=prior.choice,
                    existing_annotator=prior.annotator,
                )
            conn.execute(
                _A.insert(),
                {
                    "task_id": task_id,
                    "annotator": worker_id,
                    "choice": choice,
                    "payload": payload,
                    "seconds": seconds,
                    "answered_at": now,
                },
            )
            conn.execute(
                update(_T)
                .where(_T.c.task_id == task_id)
                .values(status="done", lease_owner=worker_id, lease_expires_at=None)
            )
        return SubmitResult(task_id=task_id, status="accepted")

    # -- reading ---------------------------------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        with read_tx(self._engine) as conn:
            row = conn.execute(select(_T).where(_T.c.task_id == task_id)).first()
        return None if row is None else _task(row)

    def counts(self, round: int) -> dict[str, dict[str, int]]:
        """Tasks per kind and status in `round`, every kind and status present (zeros included)."""
        out = {k: dict.fromkeys(STATUSES, 0) for k in KINDS}
        with read_tx(self._engine) as conn:
            rows = conn.execute(
                select(_T.c.kind, _T.c.status, func.count())
                .where(_T.c.round == round)
                .group_by(_T.c.kind, _T.c.status)
            ).all()
        for kind, status, n in rows:
            out.setdefault(kind, dict.fromkeys(STATUSES, 0))[status] = int(n)
        return out

    def open_count(self, round: int, kinds: list[str] | None = None) -> int:
        """Tasks of `round` still waiting for an answer (open or leased): 0 means the round is drained."""
        query = (
            select(func.count())
            .select_from(_T)
            .where(_T.c.round == round, _T.c.status.in_(("open", "leased")))
        )
        if kinds is not None:
            for k in kinds:
                check_kind(k, field="kinds")
            query = query.where(_T.c.kind.in_(list(kinds)))
        with read_tx(self._engine) as conn:
            return int(conn.scalar(query) or 0)

    def answers(self, round: int, kind: str) -> list[AnswerRow]:
        """Every answer to `kind` tasks of `round`, ordered by task_id (stable across runs)."""
        check_kind(kind)
        query = (
            select(
                _T.c.task_id,
                _T.c.subject_id,
                _T.c.pair_id,
                _A.c.annotator,
                _A.c.choice,
                _A.c.payload,
                _A.c.seconds,
            )
            .join(_A, _A.c.task_id == _T.c.task_id)
            .where(_T.c.round == round, _T.c.kind == kind)
            .order_by(_T.c.task_id)
        )
        with read_tx(self._engine) as conn:
            rows = conn.execute(query).all()
        return [
            AnswerRow(
                task_id=r.task_id,
                subject_id=r.subject_id,
                pair_id=r.pair_id,
                annotator=r.annotator,
                choice=r.choice,
                payload=r.payload,
                seconds=float(r.seconds),
            )
            for r in rows
        ]
