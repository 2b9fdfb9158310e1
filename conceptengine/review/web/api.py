"""Task routes: lease (with prefetch), answer, release, and the task's image.

Every route takes the user from `current_user`, so none can be reached without a token or session.
Submissions are checked twice: here for access (the task is leased to this user, of a kind they
review), then by the queue for content (choice names, correction RLEs that decode at the image size).
"""

from __future__ import annotations

import io

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image

from conceptengine.engine.media import read_bytes
from conceptengine.review.queue import ReviewQueue
from conceptengine.review.web.auth import CurrentUser
from conceptengine.review.web.leases import held_task
from conceptengine.review.web.run import ReviewRun
from conceptengine.review.web.schemas import (
    AUTH_ERRORS,
    BODY_ERRORS,
    AnswerBody,
    LeaseBody,
    Leased,
    RenewBody,
    TaskView,
    errors,
    question,
    task_view,
)

router = APIRouter(responses=AUTH_ERRORS | BODY_ERRORS | errors(404, 409))
# OpenAPI links: a leased task's id is what every task route takes (clients and schemathesis follow them).
_TASK_OPS = ("get_task", "task_image", "answer_task", "renew_task", "release_task", "segment_task")
_TASK_LINKS = {
    op: {"operationId": op, "parameters": {"task_id": "$response.body#/tasks/0/task_id"}} for op in _TASK_OPS
}
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


def _queue(request: Request) -> ReviewQueue:
    return request.app.state.queue


def _run(request: Request) -> ReviewRun:
    return request.app.state.run


@router.get("/api/openapi.json", include_in_schema=False)
def openapi(request: Request, user: CurrentUser) -> dict:
    """The API's OpenAPI document, for logged-in users only: it maps every route an attacker could try."""
    return request.app.openapi()


@router.post(
    "/api/lease",
    response_model=None,
    responses={200: {"model": Leased, "description": "the tasks now leased to you", "links": _TASK_LINKS}},
)
def lease(body: LeaseBody, request: Request, user: CurrentUser) -> dict:
    """Claim up to `n` tasks: a page asks for two (current + next) and then one per answer (prefetch)."""
    kinds = body.kinds if body.kinds is not None else list(user.kinds)  # disputes only when asked for
    if not kinds:
        raise HTTPException(422, "kinds: must name at least one task kind")
    for k in kinds:
        if k not in user.allowed_kinds:
            raise HTTPException(
                403, f"kinds: {user.name} is not assigned {k!r} tasks (assigned: {list(user.allowed_kinds)})"
            )
    run = _run(request)
    ttl = _ttl(body.ttl_s, run)
    tasks = _queue(request).lease(
        user.worker_id,
        kinds,
        body.n,
        ttl,
        round=body.round,
        admin=user.is_admin,
        max_held=run.review.max_leased_per_reviewer,
    )
    return {"tasks": [task_view(t) for t in tasks]}


def _ttl(asked: float | None, run) -> float:  # type: ignore[no-untyped-def]
    """The lease span a client asked for (default review.lease_ttl_s), refused above review.max_lease_ttl_s."""
    limit = run.review.max_lease_ttl_s
    if asked is not None and asked > limit:
        raise HTTPException(
            422, f"ttl_s: {asked:g} s is above this run's review.max_lease_ttl_s ({limit:g} s)"
        )
    return min(asked if asked is not None else run.lease_ttl_s, limit)


@router.post("/api/tasks/{task_id}/answer", operation_id="answer_task")
def answer(task_id: str, body: AnswerBody, request: Request, user: CurrentUser) -> JSONResponse:
    held = held_task(request.app.state.db, task_id, user)
    result = _queue(request).submit(
        held.task.task_id,
        user.worker_id,
        body.choice,
        body.payload,
        body.seconds,
        admin=user.is_admin,
        holder_only=True,
    )
    out = {"status": result.status, "task_id": result.task_id}
    if result.status == "conflict":
        out["detail"] = (
            f"task_id: {task_id!r} already holds a different answer ({result.existing_choice!r}), which stands"
        )
        out["existing_choice"] = result.existing_choice
        return JSONResponse(out, status_code=409)
    return JSONResponse(out)


@router.post("/api/tasks/{task_id}/renew", operation_id="renew_task")
def renew_task(task_id: str, request: Request, user: CurrentUser, body: RenewBody | None = None) -> dict:
    """Keep the lease while the reviewer works: the page renews the task on screen every 30 s."""
    held = held_task(request.app.state.db, task_id, user)
    ttl = _ttl(body.ttl_s if body is not None else None, _run(request))
    span = _run(request).review.max_lease_span_s
    expires = _queue(request).renew(held.task.task_id, user.worker_id, ttl, max_span_s=span)
    if expires is None:
        raise HTTPException(409, f"task_id: {task_id!r} is not leased to you (already answered?)")
    return {"task_id": held.task.task_id, "lease_expires_at": expires}


@router.post("/api/tasks/{task_id}/release", operation_id="release_task")
def release_task(task_id: str, request: Request, user: CurrentUser) -> dict:
    """Skip: hand a leased, unanswered task back so another reviewer gets it now, not at lease expiry."""
    held = held_task(request.app.state.db, task_id, user)
    released = _queue(request).release(held.task.task_id, user.worker_id)
    return {"released": released, "task_id": held.task.task_id}


@router.get(
    "/api/tasks/{task_id}", operation_id="get_task", response_model=None, responses={200: {"model": TaskView}}
)
def get_task(task_id: str, request: Request, user: CurrentUser) -> dict:
    return task_view(held_task(request.app.state.db, task_id, user).task)


@router.get(
    "/api/tasks/{task_id}/image",
    operation_id="task_image",
    response_class=Response,
    responses={200: {"description": "the task's image", "content": {m: {} for m in _MIME.values()}}},
)
def image(task_id: str, request: Request, user: CurrentUser) -> Response:
    """The task's image, found through the run's own media table; the client names only a task id."""
    media_id = question(held_task(request.app.state.db, task_id, user).task)["media_id"]
    data = load_media(_run(request), media_id)
    try:
        fmt = Image.open(io.BytesIO(data)).format
    except OSError as exc:
        raise HTTPException(404, f"media: {media_id} no longer decodes ({exc})") from exc
    mime = _MIME.get(fmt or "")
    if mime is None:  # e.g. TIFF: browsers cannot show it, so send PNG
        buf = io.BytesIO()
        Image.open(io.BytesIO(data)).convert("RGB").save(buf, "PNG")
        data, mime = buf.getvalue(), "image/png"
    return Response(data, media_type=mime, headers={"Cache-Control": "private, max-age=3600"})


def load_media(run: ReviewRun, media_id: str) -> bytes:
    uri = run.media_uri(media_id)
    if uri is None:
        raise HTTPException(404, f"media: {media_id!r} is not among this run's ingested media")
    try:
        return read_bytes(uri)
    except OSError as exc:
        raise HTTPException(404, f"media: {media_id!r} cannot be read from the run's pool ({exc})") from exc
