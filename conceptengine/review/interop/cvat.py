"""CVAT: export open tasks as COCO with the engine's masks as RLE pre-annotations; import the result.

CVAT imports and exports "COCO 1.0": `annotations/instances_default.json`, one category per label, masks
as uncompressed RLE with `iscrowd: 1` (what CVAT itself writes, so what it surely reads). Here a label is
a noun phrase and an image is the task's image, so an annotator sees, per image and phrase, the masks to
check or fix. CVAT's COCO has no room for our task ids (it rewrites ids and drops unknown fields), so the
export also writes `conceptengine-tasks.json`, which `import` reads to know which task each
(image, phrase) answered. CVAT's COCO has no timing either: imported answers carry 0 seconds.

One CVAT task per kind (`cvat-<kind>/`): MV = delete the bad masks, EV = add what is missing,
correction = delete, redraw and add. With consensus, one replica per item goes out (a CVAT job is one
person's answer); the other replicas stay in the queue for other reviewers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from conceptengine.engine import rle
from conceptengine.review.interop.common import (
    MANIFEST,
    ImportReport,
    InteropError,
    answer_from_masks,
    exportable_tasks,
    image_ref,
    proposed_masks,
    read_json,
    submit,
    write_json,
)
from conceptengine.review.queue import ReviewQueue, Task

COCO_FILE = "annotations/instances_default.json"


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE: column-major run lengths, starting with the count of background pixels."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def segmentation_mask(seg: Any, height: int, width: int) -> np.ndarray:
    """Any COCO segmentation (compressed or uncompressed RLE, polygons) -> (height, width) bool mask."""
    if isinstance(seg, dict):
        if list(seg.get("size") or []) != [height, width]:
            raise InteropError(
                f"segmentation: size {seg.get('size')} differs from the image {[height, width]}"
            )
        counts = seg.get("counts")
        if isinstance(counts, list):
            coded = mask_utils.frPyObjects(seg, height, width)
        elif isinstance(counts, str):
            coded = {"size": [height, width], "counts": counts.encode("ascii")}
        else:
            raise InteropError("segmentation: RLE counts must be a list or a string")
    elif isinstance(seg, list) and seg:
        coded = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    else:
        raise InteropError(f"segmentation: expected an RLE object or polygons, got {type(seg).__name__}")
    return mask_utils.decode(coded).astype(bool)


def _one_replica_per_item(tasks: list[Task]) -> list[Task]:
    seen: set[str] = set()
    out = []
    for t in sorted(tasks, key=lambda t: (t.item_id, t.replica)):
        if t.item_id not in seen:
            seen.add(t.item_id)
            out.append(t)
    return out


def _coco(tasks: list[Task], names: dict[str, str]) -> dict[str, Any]:
    images: dict[str, dict] = {}
    categories: dict[str, dict] = {}
    annotations = []
    for t in tasks:
        p = t.payload
        h, w = int(p["height"]), int(p["width"])
        image = images.setdefault(
            names[t.task_id], {"id": len(images) + 1, "file_name": names[t.task_id], "height": h, "width": w}
        )
        category = categories.setdefault(
            p["noun_phrase"], {"id": len(categories) + 1, "name": p["noun_phrase"], "supercategory": ""}
        )
        for counts in proposed_masks(t):
            mask = rle.decode(counts, h, w)
            x0, y0, x1, y1 = rle.box_xyxy(counts, h, w)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image["id"], "category_id": category["id"],
                "segmentation": uncompressed_rle(mask), "area": int(mask.sum()),
                "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 1, "attributes": {"occluded": False},
            })  # fmt: skip
    return {
        "info": {"description": "conceptengine review tasks (pre-annotations: the engine's proposals)"},
        "licenses": [],
        "images": list(images.values()),
        "categories": list(categories.values()),
        "annotations": annotations,
    }


def export_cvat(
    queue: ReviewQueue, round_index: int, out_dir: str | Path, image_root: str | None = None
) -> dict[str, int]:
    """Write `cvat-<kind>/` (COCO + task manifest) per kind with open tasks; returns tasks per kind.

    Image file names are the paths under `image_root` (default: the file's base name): upload the images
    to the CVAT task under exactly these names.
    """
    out = Path(out_dir)
    written: dict[str, int] = {}
    for kind, all_tasks in exportable_tasks(queue, round_index).items():
        tasks = _one_replica_per_item(all_tasks)
        names = {
            t.task_id: os.path.basename(t.payload["uri"])
            if image_root is None
            else image_ref(t.payload["uri"], image_root, None)
            for t in tasks
        }
        by_name: dict[str, str] = {}
        for t in tasks:
            other = by_name.setdefault(names[t.task_id], t.payload["media_id"])
            if other != t.payload["media_id"]:
                raise InteropError(
                    f"--image-root: two images are both named {names[t.task_id]!r}; pass the folder they "
                    "share as --image-root so their file names keep their sub-folders"
                )
        folder = out / f"cvat-{kind}"
        write_json(folder / COCO_FILE, _coco(tasks, names))
        manifest = {
            "format": "cvat", "kind": kind, "round": round_index, "coco": COCO_FILE,
            "tasks": [
                {"task_id": t.task_id, "file_name": names[t.task_id], "noun_phrase": t.payload["noun_phrase"]}
                for t in tasks
            ],
        }  # fmt: skip
        write_json(folder / MANIFEST, manifest)
        written[kind] = len(tasks)
    return written


def _final_masks(coco: dict[str, Any]) -> tuple[dict[tuple[str, str], list[str]], dict[str, tuple[int, int]]]:
    """(file_name, noun phrase) -> the masks CVAT returned (compressed RLE counts); file sizes."""
    try:
        images = {im["id"]: im for im in coco["images"]}
        names = {c["id"]: c["name"] for c in coco["categories"]}
        annotations = coco.get("annotations") or []
    except (KeyError, TypeError) as exc:
        raise InteropError(f"FILE: not a COCO file with images and categories ({exc})") from exc
    sizes = {im["file_name"]: (int(im["height"]), int(im["width"])) for im in images.values()}
    out: dict[tuple[str, str], list[str]] = {}
    for a in annotations:
        image = images.get(a.get("image_id"))
        if image is None or a.get("category_id") not in names:
            raise InteropError(f"FILE: annotation {a.get('id')} names an unknown image or category")
        h, w = sizes[image["file_name"]]
        mask = segmentation_mask(a.get("segmentation"), h, w)
        out.setdefault((image["file_name"], names[a["category_id"]]), []).append(rle.encode(mask))
    return out, sizes


def import_cvat(
    queue: ReviewQueue, path: str | Path, manifest_path: str | Path, annotator: str = "human:cvat"
) -> ImportReport:
    """Submit CVAT's COCO export as answers to the tasks listed in the export's manifest."""
    manifest = read_json(manifest_path, "--manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != "cvat":
        raise InteropError(f"--manifest: {manifest_path} is not a {MANIFEST} written by a CVAT export")
    finals, sizes = _final_masks(read_json(path, "FILE"))
    report = ImportReport()
    for entry in manifest.get("tasks") or []:
        task = queue.get(entry["task_id"])
        if task is None:
            report.errors.append(f"task {entry['task_id']}: not in this run's review queue")
            continue
        size = (int(task.payload["height"]), int(task.payload["width"]))
        if sizes.get(entry["file_name"]) != size:
            report.errors.append(
                f"task {task.task_id}: image {entry['file_name']!r} is not in FILE at size {size}"
                " (upload the images to CVAT under the exported file names)"
            )
            continue
        final = finals.get((entry["file_name"], entry["noun_phrase"]), [])
        choice, payload = answer_from_masks(task, final)
        submit(queue, report, task.task_id, annotator, choice, payload, 0.0)
    return report
