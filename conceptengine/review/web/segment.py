"""POST /api/tasks/{task_id}/segment: clicks on a correction task's image -> one RLE mask from the tracker.

The page sends every click made so far for the object being drawn (positive and negative), plus the
box of an existing mask when refining it; the server decodes the image itself (from the run's media,
never from the client), so a mask always has the task's image size and round-trips through the same
RLE checks as the final submission.
"""

from __future__ import annotations

import io

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from PIL import Image

from conceptengine.engine import rle
from conceptengine.review.web.api import load_media
from conceptengine.review.web.auth import CurrentUser
from conceptengine.review.web.leases import held_task
from conceptengine.review.web.schemas import AUTH_ERRORS, BODY_ERRORS, SegmentBody, errors
from conceptengine.review.web.tracker import TrackerUnavailable

router = APIRouter(responses=AUTH_ERRORS | BODY_ERRORS | errors(404, 409, 503))


def _check(body: SegmentBody, height: int, width: int) -> list[int]:
    for i, (x, y) in enumerate(body.points):
        if not (0 <= x < width and 0 <= y < height):
            raise HTTPException(422, f"points[{i}]: ({x}, {y}) lies outside the {width}x{height} image")
    labels = body.labels if body.labels is not None else [1] * len(body.points)
    if len(labels) != len(body.points):
        raise HTTPException(
            422, f"labels: {len(labels)} labels for {len(body.points)} points; give one per point"
        )
    bad = [v for v in labels if v not in (0, 1)]
    if bad:
        raise HTTPException(422, f"labels: {bad[0]!r} is not 1 (object) or 0 (not object)")
    if 1 not in labels and body.box_xyxy is None:
        raise HTTPException(422, "labels: at least one positive click (1) is needed to find an object")
    if body.box_xyxy is not None:
        x0, y0, x1, y1 = body.box_xyxy
        if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
            raise HTTPException(
                422, f"box_xyxy: {list(body.box_xyxy)} is not a box inside the {width}x{height} image"
            )
    return labels


@router.post("/api/tasks/{task_id}/segment", operation_id="segment_task")
def segment(task_id: str, body: SegmentBody, request: Request, user: CurrentUser) -> dict:
    task = held_task(request.app.state.db, task_id, user).task
    if task.kind != "correction":
        raise HTTPException(
            422, f"task_id: {task_id!r} is a {task.kind} task; only correction tasks take clicks"
        )
    tracker = request.app.state.tracker
    height, width = int(task.payload["height"]), int(task.payload["width"])
    labels = _check(body, height, width)
    media_id = task.payload["media_id"]
    image = np.array(Image.open(io.BytesIO(load_media(request.app.state.run, media_id))).convert("RGB"))
    if image.shape[:2] != (height, width):
        raise HTTPException(
            409, f"media: {media_id} is {image.shape[1]}x{image.shape[0]}, the task says {width}x{height}"
        )
    box = list(body.box_xyxy) if body.box_xyxy is not None else None
    try:
        mask, score = tracker.segment(media_id, image, [list(p) for p in body.points], labels, box)
    except TrackerUnavailable as exc:
        raise HTTPException(503, str(exc)) from exc
    counts = rle.encode(mask)
    area = int(mask.sum())
    return {
        "rle": counts,
        "area": area,
        "box_xyxy": rle.box_xyxy(counts, height, width) if area else None,
        "score": round(score, 4),
    }
