"""SQLAlchemy tables of the durable review queue.

Plain, portable column types only (strings, integers, floats, JSON), so the same schema runs on the
default SQLite file `RUN/review.db` and on a PostgreSQL URL when a team shares one queue. Times are
float seconds since the epoch: they compare the same way on every backend and let tests inject a
clock instead of sleeping.

Consensus: an *item* (one question about one subject in one round) is asked `replicas` times, once per
replica task; each replica gets its own single answer, so every exactly-once guarantee of the queue holds
per replica unchanged. `claims` binds a reviewer to one replica of an item, which is what keeps the k
answers independent: one reviewer can never answer two replicas of the same item.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Connection, Float, ForeignKey, Index, Integer, String, UniqueConstraint, inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class TaskRecord(Base):
    """One unit of human work. Ids are derived (queue.replica_task_id), so re-enqueueing is a no-op."""

    __tablename__ = "tasks"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # mv | ev | correction | adjudicate
    subject_id: Mapped[str] = mapped_column(String(128), nullable=False)
    pair_id: Mapped[str] = mapped_column(String(64), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    # open | leased | done | rolled (left open at a deadline and carried into a later round)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # When the current holder leased it: renewals never carry a lease past leased_at + the maximum span.
    leased_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    # Set when the task was rolled over: a late answer to it is forwarded to this successor task.
    rolled_to: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The item this task is a replica of (the task id of replica 0 in the round it was first enqueued);
    # kept by roll-over, so an item's answers span rounds. Adjudication tasks are their own item.
    item_id: Mapped[str] = mapped_column(String(64), nullable=False)
    replica: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    replicas: Mapped[int] = mapped_column(Integer, nullable=False, default=1)  # k of its item

    __table_args__ = (
        # Leasing reads one ordered range of this per kind and status (queue._candidates): no sort.
        Index("ix_tasks_lease", "status", "kind", "round", "created_at", "task_id"),
        Index("ix_tasks_item", "item_id"),
        # HUMAN_REVIEW's workers read the answers of their block's pairs (QueueReads.items(pair_ids=...)).
        Index("ix_tasks_pair", "pair_id", "kind"),
        Index(
            "ix_tasks_subject", "subject_id", "kind"
        ),  # an item's ruling (an adjudicate task) by its subject
    )


class AnswerRecord(Base):
    """The one answer a task ever gets (unique task_id: a second insert fails even under a race)."""

    __tablename__ = "answers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.task_id"), unique=True, nullable=False)
    annotator: Mapped[str] = mapped_column(String(128), nullable=False)
    choice: Mapped[str] = mapped_column(String(64), nullable=False)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    seconds: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    answered_at: Mapped[float] = mapped_column(Float, nullable=False)


class ClaimRecord(Base):
    """Reviewer `worker_id` works replica `replica` of item `item_id` (only items with k > 1 get claims).

    The unique key makes "one replica per reviewer per item" hold under any race, on every backend.
    """

    __tablename__ = "claims"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(String(64), nullable=False)
    worker_id: Mapped[str] = mapped_column(String(128), nullable=False)
    replica: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (UniqueConstraint("item_id", "worker_id", name="uq_claims_item_worker"),)


# Columns added after the first release, with the values old rows get: an old single-answer queue is
# a consensus queue with k = 1 whose items are its tasks.
_ADDED_TASK_COLUMNS = {
    "item_id": "VARCHAR(64)",
    "replica": "INTEGER NOT NULL DEFAULT 0",
    "replicas": "INTEGER NOT NULL DEFAULT 1",
    "leased_at": "FLOAT",  # a lease taken before it existed counts its span from its first renewal
}


def upgrade_schema(conn: Connection) -> None:
    """Create missing tables and add missing columns in place, so a run's existing queue keeps its answers."""
    Base.metadata.create_all(conn)
    present = {c["name"] for c in inspect(conn).get_columns("tasks")}
    missing = [name for name in _ADDED_TASK_COLUMNS if name not in present]
    for name in missing:
        conn.exec_driver_sql(f"ALTER TABLE tasks ADD COLUMN {name} {_ADDED_TASK_COLUMNS[name]}")
    if "item_id" in missing:
        conn.exec_driver_sql("UPDATE tasks SET item_id = task_id")
    for index in TaskRecord.__table__.indexes:  # create_all adds no index to a table that exists
        index.create(conn, checkfirst=True)
