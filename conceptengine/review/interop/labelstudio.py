"""Label Studio: export open tasks with the engine's masks as brush pre-annotations; import the answers.

One Label Studio project per task kind (each has its own labeling interface, and in the SAM 3 data
engine each reviewer works one kind): `labelstudio-<kind>.xml` is the labeling config to paste into the
project, `labelstudio-<kind>.json` the tasks to import. Every task carries its queue `task_id` in `data`,
and Label Studio's JSON export keeps `data`, so the import needs nothing but that export file.

MV / EV: the annotator picks one choice (keys 1..n); the masks are shown as `predictions`. Correction:
the annotator deletes, redraws or adds brush regions; the final regions become the edit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from conceptengine.engine import rle
from conceptengine.review.answers import CHOICES
from conceptengine.review.interop.brush import BrushRLEError, decode_mask, encode_mask
from conceptengine.review.interop.common import (
    ImportReport,
    InteropError,
    annotator_name,
    answer_from_masks,
    exportable_tasks,
    image_ref,
    proposed_masks,
    read_json,
    submit,
    write_json,
)
from conceptengine.review.queue import ReviewQueue, Task
from conceptengine.verifiers.choices import EV, MV

MASKS, CHOICE, IMAGE, LABEL = "masks", "choice", "image", "object"
MODEL_VERSION = "conceptengine"


def labeling_config(kind: str) -> str:
    """The project's labeling interface: the NP as a header, the image, brush masks, and the choices."""
    lines = [
        "<View>",
        '  <Header value="Noun phrase: $noun_phrase"/>',
        f'  <Image name="{IMAGE}" value="$image" zoom="true"/>',
        f'  <BrushLabels name="{MASKS}" toName="{IMAGE}">',
        f'    <Label value="{LABEL}" background="#ff0000"/>',
        "  </BrushLabels>",
    ]
    if kind != "correction":
        lines.append(f'  <Choices name="{CHOICE}" toName="{IMAGE}" choice="single" required="true">')
        hints = {"mv": MV, "ev": EV}[kind].descriptions
        lines += [
            f'    <Choice value={quoteattr(c)} hotkey="{i + 1}" hint={quoteattr(hint)}/>'
            for i, (c, hint) in enumerate(zip(CHOICES[kind], hints, strict=True))
        ]
        lines.append("  </Choices>")
    lines.append("</View>")
    return "\n".join(lines) + "\n"


def _region(index: int, counts: str, height: int, width: int) -> dict[str, Any]:
    mask = rle.decode(counts, height, width)
    return {
        "id": f"m{index}",
        "from_name": MASKS,
        "to_name": IMAGE,
        "type": "brushlabels",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {"format": "rle", "rle": encode_mask(mask), "brushlabels": [LABEL]},
    }


def task_json(task: Task, image: str) -> dict[str, Any]:
    p = task.payload
    h, w = int(p["height"]), int(p["width"])
    data = {
        "image": image,
        "noun_phrase": p["noun_phrase"],
        "task_id": task.task_id,
        "kind": task.kind,
        "round": task.round,
        "media_id": p["media_id"],
    }
    regions = [_region(i, c, h, w) for i, c in enumerate(proposed_masks(task))]
    return {"data": data, "predictions": [{"model_version": MODEL_VERSION, "result": regions}]}


def export_labelstudio(
    queue: ReviewQueue, round_index: int, out_dir: str | Path, image_root: str | None = None,
    image_prefix: str | None = None,
) -> dict[str, int]:  # fmt: skip
    """Write one tasks file and one labeling config per kind with open tasks; returns tasks per kind."""
    out = Path(out_dir)
    written: dict[str, int] = {}
    for kind, tasks in exportable_tasks(queue, round_index).items():
        items = [task_json(t, image_ref(t.payload["uri"], image_root, image_prefix)) for t in tasks]
        write_json(out / f"labelstudio-{kind}.json", items)
        (out / f"labelstudio-{kind}.xml").write_text(labeling_config(kind))
        written[kind] = len(items)
    return written


def _final_masks(task: Task, result: list[dict]) -> list[str]:
    h, w = int(task.payload["height"]), int(task.payload["width"])
    out = []
    for region in result:
        if region.get("type") != "brushlabels" or region.get("from_name") != MASKS:
            continue
        size = (region.get("original_height"), region.get("original_width"))
        if size != (h, w):
            raise InteropError(f"region {region.get('id')}: drawn at {size}, the image is {(h, w)}")
        try:
            out.append(rle.encode(decode_mask(region["value"]["rle"], h, w)))
        except (KeyError, TypeError, BrushRLEError) as exc:
            raise InteropError(f"region {region.get('id')}: no valid brush RLE ({exc})") from exc
    return out


def _choice(result: list[dict]) -> str | None:
    for region in result:
        if region.get("type") == "choices" and region.get("from_name") == CHOICE:
            picked = region.get("value", {}).get("choices") or []
            return picked[0] if picked else None
    return None


def import_labelstudio(queue: ReviewQueue, path: str | Path, annotator: str | None = None) -> ImportReport:
    """Submit every annotation in a Label Studio JSON export as an answer to its queue task."""
    exported = read_json(path, "FILE")
    if not isinstance(exported, list):
        raise InteropError(f"FILE: {path} is not a Label Studio JSON export (a list of tasks); use 'JSON'")
    report = ImportReport()
    for n, item in enumerate(exported):
        task_id = (item.get("data") or {}).get("task_id") if isinstance(item, dict) else None
        if not isinstance(task_id, str):
            report.errors.append(f"item {n}: no data.task_id; not a task exported by conceptengine")
            continue
        task = queue.get(task_id)
        if task is None:
            report.errors.append(f"task {task_id}: not in this run's review queue")
            continue
        for ann in item.get("annotations") or []:
            if ann.get("was_cancelled"):
                continue
            result = ann.get("result") or []
            choice = _choice(result)
            if task.kind != "correction" and choice is None:
                report.errors.append(f"task {task_id}: annotation {ann.get('id')} picks no choice")
                continue
            try:
                final = _final_masks(task, result)
            except InteropError as exc:
                report.errors.append(f"task {task_id}: {exc}")
                continue
            choice, payload = answer_from_masks(task, final, choice)
            who = annotator or annotator_name(ann.get("completed_by"), "human:labelstudio")
            submit(queue, report, task_id, who, choice, payload, float(ann.get("lead_time") or 0.0))
    return report
