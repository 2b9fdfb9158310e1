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
- Consensus (review.consensus_k = k): an MV / EV item is enqueued as k replica tasks, each answered
  once as above. A claim row binds a reviewer to one replica per item, so the k answers come from k
  different people; the submit that completes a disputed item creates its `adjudicate` task in the same
  transaction (under a lock on the item's rows), so no dispute is ever missed or escalated twice.
- Backends: SQLite serialises writers (`BEGIN IMMEDIATE`); PostgreSQL leases with
  `FOR UPDATE SKIP LOCKED`, so many reviewers lease at once without waiting on each other's rows.

This module holds everything that changes the queue; the reads are in queue_reads.py (its base class).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Self

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from conceptengine.review import queue_sql as sql
from conceptengine.review.answers import LeaseLost, LeaseSpanOver, SubmissionError, check_answer
from conceptengine.review.consensus import (
    ADJUDICATE,
    adjudication_payload,
    check_adjudication,
    check_replicas,
)
from conceptengine.review.db import insert_ignore, make_engine, read_tx, write_tx
from conceptengine.review.models import upgrade_schema
from conceptengine.review.queue_reads import QueueReads
from conceptengine.review.queue_rows import (
    ANSWER_COLS,
    QUEUE_KINDS,
    STATUSES,
    A,
    C,
    T,
    answer_of,
    check_kinds,
    chunks,
    live_task,
    replica_task_id,
    task_of,
)
from conceptengine.review.types import AnswerRow, Item, SubmitResult, Task, TaskSpec

__all__ = [
    "QUEUE_KINDS",
    "STATUSES",
    "AnswerRow",
    "Item",
    "ReviewQueue",
    "SubmissionError",
    "SubmitResult",
    "Task",
    "TaskSpec",
    "replica_task_id",
]

_SCHEMA_LOCK = 0x5E7E1A  # PostgreSQL advisory lock key for schema creation


def _canonical(kind: str, payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """One stored form per answer, so 'the same answer again' compares equal however it was spelled."""
    if kind == "correction":
        p = dict(payload or {})
        return {"add": list(p.get("add", [])), "remove": list(p.get("remove", []))}
    return dict(payload) if payload else None


def _same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _check_worker(worker_id: Any) -> None:
    if not isinstance(worker_id, str) or not worker_id.strip():
        raise SubmissionError(f"worker_id: must be a non-empty string, got {worker_id!r}")


def _held(task_id: str, worker_id: str) -> tuple[Any, ...]:
    """Rows of a task leased to this worker and not yet answered (its lease may have run out)."""
    return (T.c.task_id == task_id, T.c.status == "leased", T.c.lease_owner == worker_id)


def _check_ttl(ttl_s: Any) -> None:
    if not isinstance(ttl_s, (int, float)) or not math.isfinite(ttl_s) or ttl_s <= 0:
        raise ValueError(f"ttl_s: must be a positive number of seconds, got {ttl_s!r}")


class ReviewQueue(QueueReads):
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
                    if conn.dialect.name == "postgresql":  # one schema writer at a time across processes
                        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
                    upgrade_schema(conn)
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

    def enqueue(self, tasks: Sequence[TaskSpec], replicas: int = 1) -> int:
        """Add the items not already present, each as `replicas` tasks (consensus k); returns tasks added.

        0 when re-run after a crash. An item keeps the k it was first enqueued with.
        """
        unique: dict[str, TaskSpec] = {}
        for i, spec in enumerate(tasks):
            if not isinstance(spec, TaskSpec):
                raise SubmissionError(f"tasks[{i}]: must be a TaskSpec, got {type(spec).__name__}")
            unique.setdefault(spec.task_id, spec)
        check_replicas(replicas, {s.kind for s in unique.values()})
        if not unique:
            return 0
        now = self._clock()
        with write_tx(self._engine) as conn:
            existing: set[str] = set()
            for chunk in chunks(list(unique)):
                existing.update(conn.scalars(select(T.c.item_id).where(T.c.item_id.in_(chunk))))
            rows = [
                self._row(s, replica_task_id(s.subject_id, s.kind, s.round, j), item, j, replicas, now)
                for item, s in unique.items()
                if item not in existing
                for j in range(replicas)
            ]
            if rows:
                conn.execute(T.insert(), rows)
        return len(rows)

    @staticmethod
    def _row(
        spec: TaskSpec | Any, task_id: str, item_id: str, replica: int, replicas: int, now: float
    ) -> dict[str, Any]:
        return {
            "task_id": task_id,
            "round": spec.round,
            "kind": spec.kind,
            "subject_id": spec.subject_id,
            "pair_id": spec.pair_id,
            "payload": spec.payload,
            "status": "open",
            "attempts": 0,
            "created_at": now,
            "item_id": item_id,
            "replica": replica,
            "replicas": replicas,
        }

    def roll_over(self, from_round: int, to_round: int) -> int:
        """Carry tasks left unanswered at a round's deadline into `to_round`; returns how many moved.

        The old task is marked `rolled` and points at its successor, so a late answer to it still lands.
        The successor stays a replica of the same item, so answers already given to the item still count.
        """
        if not isinstance(to_round, int) or not isinstance(from_round, int) or to_round <= from_round:
            raise ValueError(
                f"to_round: must be an integer after from_round={from_round!r}, got {to_round!r}"
            )
        now = self._clock()
        with write_tx(self._engine) as conn:
            left = conn.execute(
                select(T).where(T.c.round == from_round, T.c.status.in_(("open", "leased")))
            ).all()
            for row in left:
                new_id = replica_task_id(row.subject_id, row.kind, to_round, row.replica)
                if conn.scalar(select(T.c.task_id).where(T.c.task_id == new_id)) is None:
                    successor = self._row(row, new_id, row.item_id, row.replica, row.replicas, now)
                    conn.execute(T.insert(), successor | {"round": to_round})
                conn.execute(
                    update(T)
                    .where(T.c.task_id == row.task_id)
                    .values(status="rolled", rolled_to=new_id, lease_owner=None, lease_expires_at=None)
                )
        return len(left)

    # -- leasing ---------------------------------------------------------------------------------

    def lease(
        self,
        worker_id: str,
        kinds: list[str],
        n: int,
        ttl_s: float,
        round: int | None = None,
        *,
        admin: bool = False,
        max_held: int | None = None,
    ) -> list[Task]:
        """Claim up to `n` open (or lease-expired) tasks of `kinds` for `ttl_s` seconds.

        Never a second replica of an item this worker already works on. `adjudicate` needs admin=True:
        the caller (web app, simulated admin) vouches for the role, the queue refuses everyone else.
        `max_held` caps the worker's unexpired leases after this call, counted in the same transaction.
        """
        _check_worker(worker_id)
        kinds = check_kinds(kinds, admin)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n: must be a non-negative integer, got {n!r}")
        _check_ttl(ttl_s)
        if n == 0:
            return []
        now = self._clock()
        with write_tx(self._engine) as conn:
            if max_held is not None:
                held = conn.scalar(sql.HELD_COUNT, {"worker": worker_id, "now": now})
                n = min(n, max(0, max_held - int(held or 0)))
                if n == 0:
                    return []
            # Twice n candidates: two replicas of one item may both come up, and only one can be taken.
            candidates = self._candidates(conn, kinds, round, now, worker_id, 2 * n)
            claimed: list[str] = []
            claim = {"worker": worker_id, "now": now, "expires": now + ttl_s}
            for c in candidates:
                if len(claimed) == n:
                    break
                if c.replicas > 1 and not self._bind(conn, c.item_id, worker_id, c.replica):
                    continue
                if conn.execute(sql.CLAIM, claim | {"tid": c.task_id}).rowcount == 1:
                    claimed.append(c.task_id)
            rows = conn.execute(sql.TASKS, {"ids": claimed}).all() if claimed else []
        by_id = {r.task_id: task_of(r) for r in rows}
        return [by_id[t] for t in claimed]

    @staticmethod
    def _candidates(
        conn: Connection, kinds: list[str], round: int | None, now: float, worker_id: str, limit: int
    ) -> list[Any]:
        """The first `limit` claimable tasks of `kinds` in lease order (see queue_sql.candidates)."""
        params: dict[str, Any] = {"worker": worker_id, "now": now, "limit": limit}
        if round is not None:
            params["round"] = round
        found: list[Any] = []
        for kind in kinds:
            for query in sql.candidates(kind, round is not None):
                found += conn.execute(query, params).all()
        found.sort(key=lambda r: (r.round, r.created_at, r.task_id))
        return found[:limit]

    @staticmethod
    def _bind(conn: Connection, item_id: str, worker_id: str, replica: int) -> bool:
        """Bind the worker to this replica of the item; False if it is bound to another one."""
        insert_ignore(
            conn,
            C,
            {"item_id": item_id, "worker_id": worker_id, "replica": replica},
            ["item_id", "worker_id"],
        )
        bound = conn.scalar(select(C.c.replica).where(C.c.item_id == item_id, C.c.worker_id == worker_id))
        return bound == replica

    def renew(
        self, task_id: str, worker_id: str, ttl_s: float, max_span_s: float | None = None
    ) -> float | None:
        """Extend `worker_id`'s lease on `task_id` to now + `ttl_s` while they still work on it (a
        correction can outlast a lease); also revives their expired lease if nobody else took the task.
        `max_span_s` caps the expiry at leased_at + max_span_s, so nobody keeps a task forever by renewing:
        past it, LeaseSpanOver. Returns the new expiry, or None when the worker does not hold it (answered,
        released, taken)."""
        _check_worker(worker_id)
        _check_ttl(ttl_s)
        now = self._clock()
        expires = now + ttl_s
        with write_tx(self._engine) as conn:
            leased_at = conn.execute(
                select(T.c.leased_at).where(*_held(task_id, worker_id)).with_for_update()
            ).first()
            if leased_at is None:
                return None
            started = leased_at[0] if leased_at[0] is not None else now
            if max_span_s is not None:
                if now >= started + max_span_s:
                    raise LeaseSpanOver(
                        f"task_id: {task_id!r} has been leased to you for the run's longest span "
                        f"(review.max_lease_span_s = {max_span_s:g} s); answer or release it"
                    )
                expires = min(expires, started + max_span_s)
            conn.execute(
                update(T)
                .where(*_held(task_id, worker_id))
                .values(lease_expires_at=expires, leased_at=started)
            )
        return expires

    def release(self, task_id: str, worker_id: str) -> bool:
        """Give a task `worker_id` holds, unanswered, back to the queue now (a 'skip'), not at lease expiry.
        False when the worker does not hold it."""
        _check_worker(worker_id)
        with write_tx(self._engine) as conn:
            res = conn.execute(
                update(T)
                .where(*_held(task_id, worker_id))
                .values(status="open", lease_owner=None, lease_expires_at=None)
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
        *,
        admin: bool = False,
        holder_only: bool = False,
    ) -> SubmitResult:
        """Record `worker_id`'s answer. Malformed input raises SubmissionError naming the field.

        `holder_only` (the web app): refuse with LeaseLost when the task is leased to someone else at the
        moment the answer is stored, checked in the transaction that stores it, so a late answer cannot
        land between another reviewer's lease and their answer."""
        _check_worker(worker_id)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise SubmissionError(f"seconds: must be a finite number, got {seconds!r}")
        if seconds < 0:
            raise SubmissionError(f"seconds: must be >= 0, got {seconds!r}")
        with read_tx(self._engine) as conn:
            task = self._resolve(conn, task_id)
        if task.kind == ADJUDICATE:
            if not admin:
                raise SubmissionError(
                    f"worker_id: {worker_id!r} may not answer {ADJUDICATE} tasks; only admins settle disputes"
                )
            check_adjudication(task.payload, choice, payload)
        else:
            check_answer(task.kind, task.payload, choice, payload)
        stored = _canonical(task.kind, payload)
        for attempt in range(2):
            try:
                return self._record(task, worker_id, choice, stored, float(seconds), holder_only)
            except IntegrityError:
                if attempt == 1:  # pragma: no cover - needs a concurrent writer on a non-locking backend
                    raise
        raise AssertionError("unreachable")

    def _resolve(self, conn: Connection, task_id: str) -> Task:
        """The task an answer to `task_id` belongs to, following roll-overs to the live successor."""
        if not isinstance(task_id, str):
            raise SubmissionError(f"task_id: must be a string, got {task_id!r}")
        task = live_task(conn, task_id)
        if task is None:
            raise SubmissionError(f"task_id: no task {task_id!r} in the review queue")
        return task

    def _record(
        self,
        task: Task,
        worker_id: str,
        choice: str,
        payload: dict[str, Any] | None,
        seconds: float,
        holder_only: bool = False,
    ) -> SubmitResult:
        now = self._clock()
        consensus = task.replicas > 1
        with write_tx(self._engine) as conn:
            if holder_only:
                # Locked on PostgreSQL (SQLite's write lock already orders it) against a concurrent lease.
                row = conn.execute(sql.HOLDER, {"tid": task.task_id}).first()
                if row is not None and row.status == "leased" and row.lease_owner != worker_id:
                    raise LeaseLost(
                        f"task_id: {task.task_id!r} is leased to another reviewer (your lease ran out)"
                    )
            if consensus:  # serialise the item's answers (PostgreSQL; SQLite's write lock already does)
                conn.execute(
                    select(T.c.task_id)
                    .where(T.c.item_id == task.item_id)
                    .order_by(T.c.task_id)
                    .with_for_update()
                ).all()
            prior = conn.execute(sql.PRIOR_ANSWER, {"tid": task.task_id}).first()
            if prior is not None:
                same = prior.choice == choice and _same(prior.payload, payload)
                return SubmitResult(
                    task_id=task.task_id,
                    status="duplicate" if same else "conflict",
                    existing_choice=prior.choice,
                    existing_annotator=prior.annotator,
                )
            if consensus and not self._bind(conn, task.item_id, worker_id, task.replica):
                raise SubmissionError(
                    f"worker_id: {worker_id!r} already answers another replica of this {task.kind} item; "
                    f"its {task.replicas} answers must come from different reviewers"
                )
            conn.execute(
                A.insert(),
                {
                    "task_id": task.task_id,
                    "annotator": worker_id,
                    "choice": choice,
                    "payload": payload,
                    "seconds": seconds,
                    "answered_at": now,
                },
            )
            conn.execute(sql.CLOSE, {"tid": task.task_id, "worker": worker_id})
            if consensus:
                self._escalate_if_disputed(conn, task, now)
        return SubmitResult(task_id=task.task_id, status="accepted")

    def _escalate_if_disputed(self, conn: Connection, task: Task, now: float) -> None:
        """When the last replica of an item is answered and the answers differ, open its adjudication."""
        answers = [
            answer_of(r)
            for r in conn.execute(
                select(T, *ANSWER_COLS)
                .join(A, A.c.task_id == T.c.task_id)
                .where(T.c.item_id == task.item_id)
                .order_by(T.c.replica)
            ).all()
        ]
        if len(answers) < task.replicas or len({a.choice for a in answers}) == 1:
            return
        adj_id = replica_task_id(task.subject_id, ADJUDICATE, task.round)
        if conn.scalar(select(T.c.task_id).where(T.c.task_id == adj_id)) is not None:
            return
        ruling = adjudication_payload(task.kind, task.subject_id, task.item_id, task.payload, answers)
        spec = dataclasses.replace(task, kind=ADJUDICATE, payload=ruling)
        conn.execute(T.insert(), self._row(spec, adj_id, adj_id, 0, 1, now))
