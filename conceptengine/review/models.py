"""SQLAlchemy tables of the durable review queue.

Plain, portable column types only (strings, integers, floats, JSON), so the same schema runs on the
default SQLite file `RUN/review.db` and on a Postgres URL when a team shares one queue. Times are
float seconds since the epoch: they compare the same way on every backend and let tests inject a
clock instead of sleeping.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class TaskRecord(Base):
    """One unit of human work. `task_id` = ids.task_id(subject, kind, round), so re-enqueueing is a no-op."""

    __tablename__ = "tasks"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # mv | ev | correction
    subject_id: Mapped[str] = mapped_column(String(128), nullable=False)
    pair_id: Mapped[str] = mapped_column(String(64), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    # open | leased | done | rolled (left open at a deadline and carried into a later round)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    # Set when the task was rolled over: a late answer to it is forwarded to this successor task.
    rolled_to: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (Index("ix_tasks_claim", "status", "kind", "round", "created_at"),)


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
