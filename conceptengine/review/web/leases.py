"""Who may act on a task: the web app's lease rules on top of the durable queue.

The queue itself takes the first well-formed answer from anyone (a simulated reviewer, a late human).
People on a network need a stricter gate: a reviewer may answer, look at or segment only a task leased
to them, so one reviewer can never overwrite or peek into another's work. Reads and the release below go
straight to the queue's tables, because the queue has no method for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select, update

from conceptengine.review.db import read_tx, write_tx
from conceptengine.review.models import TaskRecord
from conceptengine.review.types import Task
from conceptengine.review.web.accounts import User

_T = TaskRecord.__table__
_MAX_HOPS = 1000


class TaskAccessError(Exception):
    """Refused access to a task; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Held:
    """A task a user may act on: the one they hold, or its live successor after a roll-over."""

    task: Task
    answered: bool  # already done (by this user): a resubmission is a harmless duplicate


def _row_task(row) -> Task:  # type: ignore[no-untyped-def]
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


def held_task(engine: Engine, task_id: str, user: User) -> Held:
    """The task `task_id` if `user` may act on it; otherwise TaskAccessError (404 / 403 / 409).

    Allowed: leased to the user (even if the lease ran out meanwhile and nobody else took it: that work
    is real), done by the user (a retry), or rolled over at a deadline to a successor nobody else holds.
    """
    current = task_id
    with read_tx(engine) as conn:
        for _ in range(_MAX_HOPS):
            row = conn.execute(select(_T).where(_T.c.task_id == current)).first()
            if row is None:
                raise TaskAccessError(404, f"task_id: no task {task_id!r} in the review queue")
            if row.status == "rolled" and row.rolled_to:
                current = row.rolled_to
                continue
            break
    task = _row_task(row)
    if task.kind not in user.allowed_kinds:
        raise TaskAccessError(
            403, f"task_id: {task_id!r} is a {task.kind} task; {user.name} reviews {list(user.kinds)}"
        )
    rolled = current != task_id
    if task.lease_owner == user.worker_id or (rolled and task.status == "open"):
        return Held(task, answered=task.status == "done")
    if task.status == "done":
        raise TaskAccessError(409, f"task_id: {task_id!r} was already answered by another reviewer")
    if task.status == "open":
        raise TaskAccessError(
            409, f"task_id: {task_id!r} is not leased to you; lease it first (POST /api/lease)"
        )
    raise TaskAccessError(409, f"task_id: {task_id!r} is leased to another reviewer (your lease ran out)")


def renew(engine: Engine, task_id: str, user: User, ttl_s: float, now: float) -> float | None:
    """Extend the user's lease to `now + ttl_s` while they work on the task (a correction can outlast a
    lease); also revives an expired lease nobody else took. Returns the new expiry, None if not held."""
    expires = now + ttl_s
    with write_tx(engine) as conn:
        res = conn.execute(
            update(_T)
            .where(_T.c.task_id == task_id, _T.c.status == "leased", _T.c.lease_owner == user.worker_id)
            .values(lease_expires_at=expires)
        )
    return expires if res.rowcount == 1 else None


def release(engine: Engine, task_id: str, user: User) -> bool:
    """Give a leased, unanswered task back to the queue now (a 'skip'); False if the user did not hold it."""
    with write_tx(engine) as conn:
        res = conn.execute(
            update(_T)
            .where(_T.c.task_id == task_id, _T.c.status == "leased", _T.c.lease_owner == user.worker_id)
            .values(status="open", lease_owner=None, lease_expires_at=None)
        )
    return res.rowcount == 1
