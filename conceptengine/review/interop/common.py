"""What every external-tool bridge shares: which tasks go out, and how edited masks become answers.

Both bridges hand out the masks the engine proposed and get back the masks the annotator ended up with.
Answers are derived from that difference in one place, so a Label Studio or CVAT answer means exactly
what the same edit means in the web app, and lands through `ReviewQueue.submit` like any other answer:
- MV: the reviewed mask survived (unchanged) -> Accept; deleted or redrawn -> Reject (an explicit choice,
  where the tool records one, wins);
- EV: nothing added -> Accept, something added -> Reject (the pair was not exhaustive);
- correction: removed = proposed masks no final mask matches; added = final masks matching none.
"Matches" means mask IoU >= SAME_MASK_IOU: a tool that re-encodes an untouched mask must not turn
it into a remove + add.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from conceptengine.engine import rle
from conceptengine.review.answers import SubmissionError
from conceptengine.review.queue import ReviewQueue, Task

EXPORT_KINDS: tuple[str, ...] = ("mv", "ev", "correction")
SAME_MASK_IOU = 0.95
MANIFEST = "conceptengine-tasks.json"


class InteropError(ValueError):
    """An export or import the user asked for cannot be done; the message says what to fix."""


@dataclass
class ImportReport:
    """How each imported answer fared; `errors` name the task and what was wrong with its answer."""

    accepted: int = 0
    duplicate: int = 0
    conflict: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicate": self.duplicate,
            "conflict": self.conflict,
            "errors": len(self.errors),
        }


def exportable_tasks(queue: ReviewQueue, round_index: int, now: float | None = None) -> dict[str, list[Task]]:
    """Open reviewer tasks of the round (expired leases count as open), by kind; admins' work stays home."""
    now = time.time() if now is None else now
    out: dict[str, list[Task]] = {k: [] for k in EXPORT_KINDS}
    for t in queue.tasks(round_index, list(EXPORT_KINDS), statuses=("open", "leased")):
        if t.status == "open" or (t.lease_expires_at is not None and t.lease_expires_at <= now):
            out[t.kind].append(t)
    return {k: tasks for k, tasks in out.items() if tasks}


def proposed_masks(task: Task) -> list[str]:
    """The engine's masks a task shows: MV its one mask, EV / correction every mask of the pair."""
    return [task.payload["rle"]] if task.kind == "mv" else list(task.payload["rles"])


def image_ref(uri: str, image_root: str | None, prefix: str | None) -> str:
    """How the tool finds the image: `prefix` + the path under `image_root`, or the URI as stored."""
    if image_root is None:
        return uri if prefix is None else prefix + os.path.basename(uri)
    rel = os.path.relpath(uri, image_root)
    if rel.startswith(".."):
        raise InteropError(f"--image-root: {uri} is not under {image_root}")
    return (prefix or "") + rel.replace(os.sep, "/")


def _matches(a: list[str], b: list[str], height: int, width: int) -> np.ndarray:
    return rle.iou_matrix(a, b, height, width) >= SAME_MASK_IOU


def answer_from_masks(task: Task, final: list[str], choice: str | None = None) -> tuple[str, dict | None]:
    """(choice, payload) for a task whose proposed masks the annotator turned into `final` (RLE counts)."""
    h, w = int(task.payload["height"]), int(task.payload["width"])
    given = proposed_masks(task)
    hit = _matches(given, final, h, w)
    if task.kind == "mv":
        return (choice or ("Accept" if hit.any() else "Reject")), None
    added = [f for j, f in enumerate(final) if not hit[:, j].any()]
    if task.kind == "ev":
        return (choice or ("Reject" if added else "Accept")), None
    ids = task.payload.get("instance_ids") or []
    removed = [ids[i] if len(ids) == len(given) else i for i in range(len(given)) if not hit[i].any()]
    return "Done", {"add": added, "remove": removed}


def submit(queue: ReviewQueue, report: ImportReport, task_id: str, annotator: str,
           choice: str, payload: dict | None, seconds: float) -> None:  # fmt: skip
    """One imported answer through the queue's own checks; a bad one is reported, never half-stored."""
    try:
        result = queue.submit(task_id, annotator, choice, payload, seconds)
    except SubmissionError as exc:
        report.errors.append(f"task {task_id}: {exc}")
        return
    setattr(report, result.status, getattr(report, result.status) + 1)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def read_json(path: str | Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise InteropError(f"{what}: {path} does not exist") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InteropError(f"{what}: {path} is not JSON ({exc})") from exc


def annotator_name(raw: Any, default: str) -> str:
    """`human:<who>` in the verdict table's convention, whatever form the tool gives `who` in."""
    if isinstance(raw, dict):
        raw = raw.get("email") or raw.get("username") or raw.get("id")
    if raw is None or str(raw).strip() == "":
        return default
    name = str(raw).strip()
    return name if name.startswith("human:") else f"human:{name}"
