"""JSON bodies of the review API (see API.md) and the task view a page renders.

Request models forbid unknown fields, so a typo in a client (`"choise"`) is a 422 naming it instead of
a silently ignored answer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from conceptengine.engine import rle
from conceptengine.review.answers import CHOICES
from conceptengine.review.consensus import ADJUDICATE
from conceptengine.review.types import Task
from conceptengine.verifiers.choices import EV, MV

MAX_LEASE = 50
MAX_TTL_S = 4 * 3600.0
MAX_ROUND = 2**31 - 1  # a 32-bit SQL INTEGER, as the queue stores rounds
# One key per choice, in the paper's order: digits, because they sit under one hand on every keyboard.
_DESCRIPTIONS = {"mv": MV.descriptions, "ev": EV.descriptions, "correction": ("save the edits",)}
_KEYS = {"mv": "12345", "ev": "123456", "correction": ("Enter",)}


class ErrorBody(BaseModel):
    """Every error the API answers: one message, `<field>: <what is wrong>` (a 409 on an answer adds the
    standing answer's fields)."""

    detail: str


_ERROR_MEANING = {
    400: "the body does not parse as JSON (e.g. it is not UTF-8)",
    401: "no valid bearer token or session",
    403: "the user may not do this (role, task kind, or a cross-site request)",
    404: "no such task leased to this user, or its media is gone",
    409: "the lease is lost or the task already holds another answer",
    413: "the request body is over the size limit",
    422: "a field is missing, malformed or out of range; `detail` names it",
    429: "too many failed logins from this address or for this token; retry after `Retry-After` seconds",
    503: "the correction tracker is not available",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` declaring these error statuses with the ErrorBody shape."""
    return {code: {"model": ErrorBody, "description": _ERROR_MEANING[code]} for code in codes}


# What any authenticated route can answer besides its own errors.
AUTH_ERRORS = errors(401, 403, 413, 422, 429)
# A body that is not UTF-8 JSON at all: the framework answers 400 before validation.
BODY_ERRORS = errors(400)


def _number_not_bool(value: Any) -> Any:
    # JSON Schema counts 3.0 as an integer, so pydantic's lax int (3.0 -> 3, 3.5 refused) is right, but lax
    # also takes true and "3", which the schema does not: those are refused here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")  # noqa: TRY004 (pydantic reports ValueError only)
    return value


# Bounds first, then the check: that order keeps them in the JSON schema as minimum/maximum.
LeaseCount = Annotated[int, Field(ge=1, le=MAX_LEASE), BeforeValidator(_number_not_bool)]
RoundNumber = Annotated[int, Field(ge=0, le=MAX_ROUND), BeforeValidator(_number_not_bool)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginBody(_Body):
    token: str = Field(min_length=1, max_length=256)


class LeaseBody(_Body):
    kinds: list[str] | None = Field(None, min_length=1)  # default: every kind the user reviews
    # Numbers are numbers (true is not 1) and bounded: a round past MAX_ROUND overflowed the database's
    # integer and answered 500.
    n: LeaseCount = 1
    ttl_s: float | None = Field(
        None, gt=0, le=MAX_TTL_S, strict=True
    )  # default: the run's review.lease_ttl_s
    round: RoundNumber | None = None


class RenewBody(_Body):
    ttl_s: float | None = Field(None, gt=0, le=MAX_TTL_S, strict=True)


# Which of these a task takes depends on its kind (API.md): the queue checks that, naming the kind's choices.
_ANY_CHOICE = sorted({c for names in CHOICES.values() for c in names})


class AnswerBody(_Body):
    choice: str = Field(json_schema_extra={"enum": _ANY_CHOICE})
    payload: dict[str, Any] | None = None
    seconds: float = Field(0.0, ge=0, le=24 * 3600, strict=True, allow_inf_nan=False)


class SegmentBody(_Body):
    points: list[tuple[float, float]] = Field(min_length=1, max_length=64)  # (x, y) image pixels
    labels: list[int] | None = None  # 1 = positive click, 0 = negative; default all positive
    box_xyxy: tuple[float, float, float, float] | None = None  # e.g. the box of a mask being refined


class ChoiceView(BaseModel):
    name: str
    key: str
    description: str


class MaskView(BaseModel):
    instance_id: str | None
    rle: str  # COCO compressed counts at the task's width x height
    box_xyxy: list[float] | None


class TaskView(BaseModel):
    """What `task_view` returns (documentation of the responses; the view is built as a dict)."""

    task_id: str
    kind: str
    round: int
    noun_phrase: str
    width: int
    height: int
    image_url: str
    masks: list[MaskView]
    choices: list[ChoiceView]
    lease_expires_at: float | None
    of_kind: str | None = None  # adjudications only: the kind of the disputed task
    answers: list[dict[str, Any]] | None = None  # adjudications only: every reviewer's answer


class Leased(BaseModel):
    tasks: list[TaskView]


def with_lease_limit(doc: dict[str, Any], max_ttl_s: float) -> dict[str, Any]:
    """The OpenAPI document with this run's longest lease (review.max_lease_ttl_s) on every `ttl_s`: the
    models carry only the hard MAX_TTL_S, and the run's config may allow less."""
    for body in ("LeaseBody", "RenewBody"):
        for branch in doc["components"]["schemas"][body]["properties"]["ttl_s"]["anyOf"]:
            if branch.get("type") == "number":
                branch["maximum"] = min(branch["maximum"], max_ttl_s)
    return doc


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
