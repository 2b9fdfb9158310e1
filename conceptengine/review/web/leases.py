"""Who may act on a task: the web app's lease rules on top of the durable queue.

The queue itself takes the first well-formed answer from anyone (a simulated reviewer, a late human).
People on a network need a stricter gate: a reviewer may answer, look at or segment only a task leased
to them, so one reviewer can never overwrite or peek into another's work. The check reads the queue's
tasks table itself, following roll-overs as the queue does (`live_task`); renewing and releasing a held
task are the queue's own `ReviewQueue.renew` / `ReviewQueue.release`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from conceptengine.review.db import read_tx
from conceptengine.review.queue_rows import live_task
from conceptengine.review.types import Task
from conceptengine.review.web.accounts import User


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


def held_task(engine: Engine, task_id: str, user: User) -> Held:
    """The task `task_id` if `user` may act on it; otherwise TaskAccessError (404 / 403 / 409).

    Allowed: leased to the user (even if the lease ran out meanwhile and nobody else took it: that work
    is real), done by the user (a retry), or rolled over at a deadline to a successor nobody else holds.
    """
    with read_tx(engine) as conn:
        task = live_task(conn, task_id)
    if task is None:
        raise TaskAccessError(404, f"task_id: no task {task_id!r} in the review queue")
    if task.kind not in user.allowed_kinds:
        raise TaskAccessError(
            403, f"task_id: {task_id!r} is a {task.kind} task; {user.name} reviews {list(user.kinds)}"
        )
    rolled = task.task_id != task_id
    if task.lease_owner == user.worker_id or (rolled and task.status == "open"):
        return Held(task, answered=task.status == "done")
    if task.status == "done":
        raise TaskAccessError(409, f"task_id: {task_id!r} was already answered by another reviewer")
    if task.status == "open":
        raise TaskAccessError(
            409, f"task_id: {task_id!r} is not leased to you; lease it first (POST /api/lease)"
        )
    raise TaskAccessError(409, f"task_id: {task_id!r} is leased to another reviewer (your lease ran out)")
