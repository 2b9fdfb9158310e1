"""Values that cross the review queue's boundary: what the engine enqueues and what callers get back.

They are plain, picklable values (no live database rows), so a Ray actor or a web handler can hold
them after the session that produced them is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from conceptengine.engine import ids
from conceptengine.review.answers import check_task_payload


class TaskSpec(BaseModel):
    """A task the engine wants answered. Its id is derived, never chosen, so enqueueing is idempotent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    round: int = Field(ge=0)
    subject_id: str = Field(min_length=1)  # instance_id for mv, pair_id for ev / correction
    pair_id: str = Field(min_length=1)
    payload: dict[str, Any]

    @model_validator(mode="after")
    def _payload_fits_kind(self) -> TaskSpec:
        check_task_payload(self.kind, self.payload)
        return self

    @property
    def task_id(self) -> str:
        return ids.task_id(self.subject_id, self.kind, self.round)


@dataclass(frozen=True)
class Task:
    task_id: str
    round: int
    kind: str
    subject_id: str
    pair_id: str
    payload: dict[str, Any]
    status: str
    lease_owner: str | None
    lease_expires_at: float | None
    attempts: int
    created_at: float
    # Consensus: this task is replica `replica` of `replicas` asking the same question (item `item_id`).
    item_id: str = ""
    replica: int = 0
    replicas: int = 1


@dataclass(frozen=True)
class AnswerRow:
    task_id: str
    subject_id: str
    pair_id: str
    annotator: str
    choice: str
    payload: dict[str, Any] | None
    seconds: float
    item_id: str = ""
    round: int = 0


@dataclass(frozen=True)
class Item:
    """One question asked `replicas` times (consensus), with every answer so far and the admin's ruling.

    `answers` holds at most one answer per replica, from distinct reviewers; `adjudication` is the answer
    to the item's adjudicate task, which exists only when all replicas answered and disagreed.
    """

    item_id: str
    kind: str
    subject_id: str
    pair_id: str
    replicas: int
    answers: tuple[AnswerRow, ...]
    adjudication: AnswerRow | None = None


@dataclass(frozen=True)
class SubmitResult:
    """Outcome of a well-formed submission.

    `accepted`: this answer is now the task's answer. `duplicate`: the task already holds this very
    answer (a retried request), nothing changed. `conflict`: the task already holds a different answer,
    which stands; racing reviewers are normal, so this is a result, not an exception.
    `task_id` is the task that holds the answer: the successor when the submitted task was rolled over.
    """

    task_id: str
    status: Literal["accepted", "duplicate", "conflict"]
    existing_choice: str | None = None
    existing_annotator: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"
