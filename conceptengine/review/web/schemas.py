"""JSON bodies of the review API (see API.md) and the task view a page renders.

Request models forbid unknown fields, so a typo in a client (`"choise"`) is a 422 naming it instead of
a silently ignored answer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conceptengine.engine import rle
from conceptengine.review.choices import CHOICES
from conceptengine.review.consensus import ADJUDICATE
from conceptengine.review.types import Task
from conceptengine.verifiers.choices import EV, MV

MAX_LEASE = 50
MAX_TTL_S = 4 * 3600.0
MAX_ROUND = 2**31 - 1  # a 32-bit SQL INTEGER, as the queue stores rounds
# One key per choice, in the paper's order: digits, because they sit under one hand on every keyboard.
_DESCRIPTIONS = {"mv": MV.descriptions, "ev": EV.descriptions, "correction": ("save the edits",)}
_KEYS = {"mv": "12345", "ev": "123456", "correction": ("Enter",)}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginBody(_Body):
    token: str = Field(min_length=1, max_length=256)


class LeaseBody(_Body):
    kinds: list[str] | None = None  # default: every kind the user reviews
    # Numbers are strict (true is not 1) and bounded: a round past MAX_ROUND overflowed the database's
    # integer and answered 500.
    n: int = Field(1, ge=1, le=MAX_LEASE, strict=True)
    ttl_s: float | None = Field(
        None, gt=0, le=MAX_TTL_S, strict=True
    )  # default: the run's review.lease_ttl_s
    round: int | None = Field(None, ge=0, le=MAX_ROUND, strict=True)


class RenewBody(_Body):
    ttl_s: float | None = Field(None, gt=0, le=MAX_TTL_S, strict=True)


class AnswerBody(_Body):
    choice: str
    payload: dict[str, Any] | None = None
    seconds: float = Field(0.0, ge=0, le=24 * 3600, strict=True, allow_inf_nan=False)


class SegmentBody(_Body):
    points: list[tuple[float, float]] = Field(min_length=1, max_length=64)  # (x, y) image pixels
    labels: list[int] | None = None  # 1 = positive click, 0 = negative; default all positive
    box_xyxy: tuple[float, float, float, float] | None = None  # e.g. the box of a mask being refined


def choices_view(kind: str) -> list[dict[str, str]]:
    return [
        {"name": name, "key": key, "description": desc}
        for name, key, desc in zip(CHOICES[kind], _KEYS[kind], _DESCRIPTIONS[kind], strict=True)
    ]


def question(task: Task) -> dict[str, Any]:
    """The payload of the question a task shows: its own, or for an adjudication the disputed task's."""
    return task.payload["task"] if task.kind == ADJUDICATE else task.payload


def task_view(task: Task) -> dict[str, Any]:
    """What a page needs to show a task: the NP, the image's URL and size, its masks and the choices.

    An adjudication shows the question it settles (its kind's masks and choices) plus every reviewer's
    answer, so the admin sees exactly what the reviewers saw.
    """
    if task.kind == ADJUDICATE:
        inner = task_view(replace(task, kind=task.payload["of_kind"], payload=task.payload["task"]))
        return inner | {
            "kind": ADJUDICATE,
            "of_kind": task.payload["of_kind"],
            "answers": task.payload["answers"],
        }
    p = task.payload
    if task.kind == "mv":
        masks = [{"instance_id": p["instance_id"], "rle": p["rle"], "box_xyxy": list(p["box_xyxy"])}]
    else:
        h, w = int(p["height"]), int(p["width"])
        ids = p.get("instance_ids") or [None] * len(p["rles"])
        masks = [
            {"instance_id": i, "rle": r, "box_xyxy": rle.box_xyxy(r, h, w)}
            for i, r in zip(ids, p["rles"], strict=True)
        ]
    return {
        "task_id": task.task_id,
        "kind": task.kind,
        "round": task.round,
        "noun_phrase": p["noun_phrase"],
        "width": int(p["width"]),
        "height": int(p["height"]),
        "image_url": f"/api/tasks/{task.task_id}/image",
        "masks": masks,
        "choices": choices_view(task.kind),
        "lease_expires_at": task.lease_expires_at,
    }
