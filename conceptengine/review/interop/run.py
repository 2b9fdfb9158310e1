"""`conceptengine review export|import`: the interop bridges applied to a run's own review queue."""

from __future__ import annotations

from pathlib import Path

from conceptengine.review.interop.common import ImportReport, InteropError
from conceptengine.review.interop.cvat import export_cvat, import_cvat
from conceptengine.review.interop.labelstudio import export_labelstudio, import_labelstudio
from conceptengine.review.queue import ReviewQueue
from conceptengine.review.web.run import ReviewRun

FORMATS: tuple[str, ...] = ("labelstudio", "cvat")


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise InteropError(f"--format: {fmt!r} is not supported; choose one of {list(FORMATS)}")


def open_queue(run_dir: str) -> ReviewQueue:
    """The queue the run's HUMAN_REVIEW step fills (`review.url` from RUN/run.json, else RUN/review.db)."""

    return ReviewQueue(ReviewRun.open(run_dir).review_url)


def export_run(
    run_dir: str, round_index: int, fmt: str, out: str | Path, image_root: str | None = None,
    image_prefix: str | None = None,
) -> dict[str, int]:  # fmt: skip
    """Export the round's open tasks; returns how many tasks of each kind were written."""
    _check_format(fmt)
    if fmt == "cvat" and image_prefix is not None:
        raise InteropError("--image-prefix: only for labelstudio; CVAT matches images by file name")
    with open_queue(run_dir) as queue:
        if fmt == "labelstudio":
            return export_labelstudio(queue, round_index, out, image_root, image_prefix)
        return export_cvat(queue, round_index, out, image_root)


def import_run(
    run_dir: str, path: str | Path, fmt: str, manifest: str | Path | None = None, annotator: str | None = None
) -> ImportReport:
    """Submit a tool's export as answers to the run's queue."""
    _check_format(fmt)
    with open_queue(run_dir) as queue:
        if fmt == "labelstudio":
            return import_labelstudio(queue, path, annotator)
        if manifest is None:
            raise InteropError(
                "--manifest: CVAT's COCO export carries no task ids; pass the conceptengine-tasks.json "
                "that `review export --format cvat` wrote next to the COCO file"
            )
        return import_cvat(queue, path, manifest, annotator or "human:cvat")
