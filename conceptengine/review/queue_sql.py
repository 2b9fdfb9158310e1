"""The statements every lease and answer runs, built once with bind parameters.

Building a SQLAlchemy expression (coercing each comparison, then deriving its cache key) costs more than
running it on an indexed table, and on SQLite it happens under the write lock, where every millisecond
is every other reviewer's wait. So the hot statements are built here once (candidates once per kind) and
callers pass only values: `conn.execute(CLAIM, {"tid": ..., "worker": ..., "now": ..., "expires": ...})`.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import Select, and_, bindparam, func, or_, select, update

from conceptengine.review.queue_rows import A, C, T

# Bind names differ from column names: SQLAlchemy reserves those for an UPDATE's own SET values.
_CLAIMABLE = or_(T.c.status == "open", and_(T.c.status == "leased", T.c.lease_expires_at <= bindparam("now")))

#: Tasks by ids (params: ids, a list).
TASKS = select(T).where(T.c.task_id.in_(bindparam("ids", expanding=True)))
#: How many unexpired leases a worker holds (params: worker, now).
HELD_COUNT = (
    select(func.count())
    .select_from(T)
    .where(
        T.c.status == "leased",
        T.c.lease_owner == bindparam("worker"),
        T.c.lease_expires_at > bindparam("now"),
    )
)
#: Lease one claimable task, compare-and-set (params: tid, worker, now, expires); rowcount 1 if claimed.
CLAIM = (
    update(T)
    .where(T.c.task_id == bindparam("tid"), _CLAIMABLE)
    .values(
        status="leased",
        lease_owner=bindparam("worker"),
        lease_expires_at=bindparam("expires"),
        leased_at=bindparam("now"),
        attempts=T.c.attempts + 1,
    )
)
#: A task's status and holder, locked on PostgreSQL against a concurrent lease (params: tid).
HOLDER = select(T.c.status, T.c.lease_owner).where(T.c.task_id == bindparam("tid")).with_for_update()
#: The answer a task already has (params: tid).
PRIOR_ANSWER = select(A).where(A.c.task_id == bindparam("tid"))
#: Close an answered task (params: tid, worker).
CLOSE = (
    update(T)
    .where(T.c.task_id == bindparam("tid"))
    .values(status="done", lease_owner=bindparam("worker"), lease_expires_at=None)
)
CANDIDATE_COLS = (T.c.task_id, T.c.item_id, T.c.replica, T.c.replicas, T.c.round, T.c.created_at)


@cache
def candidates(kind: str, by_round: bool) -> tuple[Select, Select]:
    """The open and the lease-expired tasks of `kind`, each in lease order (round, age, id), skipping
    items the worker holds another replica of; locked on PostgreSQL (params: worker, now, limit, and
    round when `by_round`).

    Two ordered ranges of ix_tasks_lease that stop after `limit` rows: an `IN` / `OR` across statuses or
    kinds would make both backends sort every open task of the queue on every lease.
    """
    other_replica = (
        select(C.c.id)
        .where(C.c.item_id == T.c.item_id, C.c.worker_id == bindparam("worker"), C.c.replica != T.c.replica)
        .exists()
    )
    expired = and_(T.c.status == "leased", T.c.lease_expires_at <= bindparam("now"))
    out = []
    for status in (T.c.status == "open", expired):
        query = select(*CANDIDATE_COLS).where(T.c.kind == kind, status, ~other_replica)
        if by_round:
            query = query.where(T.c.round == bindparam("round"))
        query = query.order_by(T.c.round, T.c.created_at, T.c.task_id).limit(bindparam("limit"))
        out.append(query.with_for_update(skip_locked=True, of=T))
    return out[0], out[1]
