"""Label Studio and CVAT round trips: export open tasks, play the tool's part, import the answers.

The tool's part is written the way each tool writes its export (Label Studio: the tasks with an
`annotations` list holding brush regions and choices; CVAT: COCO with renumbered ids, uncompressed RLE
or polygons). What lands in the queue must equal what a web-app answer with the same edit stores.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from conceptengine.engine import rle
from conceptengine.review.interop.brush import decode_mask, encode_mask
from conceptengine.review.interop.common import MANIFEST, InteropError
from conceptengine.review.interop.cvat import COCO_FILE, export_cvat, import_cvat, segmentation_mask
from conceptengine.review.interop.labelstudio import export_labelstudio, import_labelstudio
from conceptengine.review.queue import ReviewQueue, TaskSpec
from tests.review.helpers import H, W, ev_spec, mv_spec, square


def _correction(i: int, rles: list[str]) -> TaskSpec:
    spec = ev_spec(i, kind="correction", rles=rles)
    payload = spec.payload | {"instance_ids": [f"pair{i}:{k:03d}" for k in range(len(rles))]}
    return TaskSpec(
        kind="correction", round=1, subject_id=spec.subject_id, pair_id=spec.pair_id, payload=payload
    )


@pytest.fixture
def queue(tmp_path: Path) -> ReviewQueue:
    q = ReviewQueue(str(tmp_path / "review.db"))
    q.enqueue([ev_spec(3)])
    q.lease("someone", ["ev"], 1, ttl_s=600.0)  # held in the web app: not exported
    q.enqueue([mv_spec(0), mv_spec(4)])  # two masks of one pair (same image, same phrase)
    q.enqueue([ev_spec(1, rles=[square(0, 0), square(8, 8)])])
    q.enqueue([_correction(2, [square(0, 0), square(8, 8)])])
    return q


NEW = square(4, 10)  # the instance the annotator adds


def test_labelstudio_round_trip(queue: ReviewQueue, tmp_path: Path) -> None:
    out = tmp_path / "ls"
    assert export_labelstudio(queue, 1, out, image_prefix="/data/local-files/?d=") == {
        "mv": 2,
        "ev": 1,
        "correction": 1,
    }
    for kind in ("mv", "ev", "correction"):
        root = ET.fromstring((out / f"labelstudio-{kind}.xml").read_text())
        assert [c.get("value") for c in root.iter("Choice")][:1] == (
            [] if kind == "correction" else ["Accept"]
        )
    tasks = {
        t["data"]["kind"] + str(i): t
        for i, t in enumerate(json.loads((out / "labelstudio-mv.json").read_text()))
    }
    tasks |= {"ev": json.loads((out / "labelstudio-ev.json").read_text())[0]}
    tasks |= {"correction": json.loads((out / "labelstudio-correction.json").read_text())[0]}
    assert tasks["mv0"]["data"]["image"] == "/data/local-files/?d=m0.png"
    # Pre-annotations decode to exactly the task's masks.
    regions = tasks["correction"]["predictions"][0]["result"]
    assert [rle.encode(decode_mask(r["value"]["rle"], H, W)) for r in regions] == [square(0, 0), square(8, 8)]

    # Label Studio's part: MV0 accepted, MV1 rejected, EV rejected, correction keeps mask 0, drops
    # mask 1 and adds one.
    def annotate(task: dict, result: list[dict]) -> None:
        task["annotations"] = [{"id": 7, "completed_by": {"id": 3, "email": "ann@team"}, "lead_time": 12.5,
                                "was_cancelled": False, "result": result}]  # fmt: skip

    def choice(c: str) -> dict:
        return {"from_name": "choice", "to_name": "image", "type": "choices", "value": {"choices": [c]}}

    new_region = dict(regions[0], id="new", value={"format": "rle", "rle": encode_mask(rle.decode(NEW, H, W)),
                                                   "brushlabels": ["object"]})  # fmt: skip
    annotate(tasks["mv0"], [choice("Accept")])
    annotate(tasks["mv1"], [choice("Reject")])
    annotate(tasks["ev"], [choice("Reject")])
    annotate(tasks["correction"], [regions[0], new_region])
    export_file = tmp_path / "from-label-studio.json"
    export_file.write_text(json.dumps([*tasks.values(), {"data": {"image": "x"}, "annotations": []}]))

    report = import_labelstudio(queue, export_file)
    assert report.as_dict() == {"accepted": 4, "duplicate": 0, "conflict": 0, "errors": 1}
    assert "no data.task_id" in report.errors[0]
    mv = {a.subject_id: (a.choice, a.annotator, a.seconds) for a in queue.answers(1, "mv")}
    assert mv == {
        "pair0:000": ("Accept", "human:ann@team", 12.5),
        "pair0:004": ("Reject", "human:ann@team", 12.5),
    }
    assert [a.choice for a in queue.answers(1, "ev")] == ["Reject"]
    (fix,) = queue.answers(1, "correction")
    assert fix.payload == {"add": [NEW], "remove": ["pair2:001"]}  # what the web app stores for this edit
    again = import_labelstudio(queue, export_file)  # importing the same file twice is harmless
    assert (again.accepted, again.duplicate) == (0, 4)


def test_labelstudio_import_reports_unanswerable_annotations(queue: ReviewQueue, tmp_path: Path) -> None:
    export_labelstudio(queue, 1, tmp_path)
    (task,) = json.loads((tmp_path / "labelstudio-ev.json").read_text())
    task["annotations"] = [{"id": 1, "result": []}]  # submitted without picking a choice
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([task]))
    report = import_labelstudio(queue, bad)
    assert report.accepted == 0 and report.errors == [
        f"task {task['data']['task_id']}: annotation 1 picks no choice"
    ]
    bad.write_text(json.dumps({"tasks": []}))
    with pytest.raises(InteropError, match="not a Label Studio JSON export"):
        import_labelstudio(queue, bad)


def _polygon(x0: int, y0: int, size: int = 4) -> list[list[float]]:
    return [[x0, y0, x0 + size, y0, x0 + size, y0 + size, x0, y0 + size]]


def test_cvat_round_trip(queue: ReviewQueue, tmp_path: Path) -> None:
    assert export_cvat(queue, 1, tmp_path) == {"mv": 2, "ev": 1, "correction": 1}
    coco = json.loads((tmp_path / "cvat-mv" / COCO_FILE).read_text())
    assert [im["file_name"] for im in coco["images"]] == ["m0.png"]  # both MV masks on one image
    assert [c["name"] for c in coco["categories"]] == ["red square"]
    decoded = [rle.encode(segmentation_mask(a["segmentation"], H, W)) for a in coco["annotations"]]
    assert decoded == [mv_spec(0).payload["rle"], mv_spec(4).payload["rle"]]
    assert all(
        a["iscrowd"] == 1 and isinstance(a["segmentation"]["counts"], list) for a in coco["annotations"]
    )

    def returned(kind: str, keep: list[int], add: list) -> Path:
        """CVAT's export: ids renumbered, extra fields dropped, kept masks plus the added ones."""
        data = json.loads((tmp_path / f"cvat-{kind}" / COCO_FILE).read_text())
        kept = [data["annotations"][i] for i in keep]
        anns = [{"id": 100 + j, "image_id": a["image_id"], "category_id": a["category_id"],
                 "segmentation": a["segmentation"], "iscrowd": 1} for j, a in enumerate(kept)]  # fmt: skip
        for j, seg in enumerate(add):
            anns.append({"id": 200 + j, "image_id": 1, "category_id": 1, "segmentation": seg, "iscrowd": 0})
        path = tmp_path / f"returned-{kind}.json"
        path.write_text(json.dumps(data | {"annotations": anns}))
        return path

    def imported(kind: str, path: Path) -> dict:
        return import_cvat(queue, path, tmp_path / f"cvat-{kind}" / MANIFEST).as_dict()

    assert imported("mv", returned("mv", keep=[0], add=[])) == {
        "accepted": 2,
        "duplicate": 0,
        "conflict": 0,
        "errors": 0,
    }
    assert imported("ev", returned("ev", keep=[0, 1], add=[_polygon(4, 10)])) == {
        "accepted": 1, "duplicate": 0, "conflict": 0, "errors": 0,
    }  # fmt: skip
    compressed = {"size": [H, W], "counts": NEW}
    assert imported("correction", returned("correction", keep=[0], add=[compressed]))["accepted"] == 1
    assert {a.subject_id: a.choice for a in queue.answers(1, "mv")} == {
        "pair0:000": "Accept",
        "pair0:004": "Reject",
    }
    (ev,) = queue.answers(1, "ev")
    assert (ev.choice, ev.annotator, ev.seconds) == ("Reject", "human:cvat", 0.0)  # a mask was added
    (fix,) = queue.answers(1, "correction")
    assert fix.payload == {"add": [NEW], "remove": ["pair2:001"]}
    with pytest.raises(InteropError, match="^--manifest: .* is not a conceptengine-tasks.json"):
        import_cvat(queue, tmp_path / "returned-mv.json", tmp_path / "returned-mv.json")


def test_cvat_export_sends_one_replica_per_item(tmp_path: Path) -> None:
    q = ReviewQueue(str(tmp_path / "review.db"))
    q.enqueue([ev_spec(i, rles=[square(0, 0)]) for i in range(3)], replicas=3)
    assert export_cvat(q, 1, tmp_path / "x") == {"ev": 3}
    assert export_labelstudio(q, 1, tmp_path / "y") == {"ev": 9}  # one Label Studio task per replica


def test_segmentation_mask_checks_the_size() -> None:
    with pytest.raises(InteropError, match=r"^segmentation: size \[4, 4\] differs"):
        segmentation_mask({"size": [4, 4], "counts": [16]}, H, W)
    assert segmentation_mask(_polygon(0, 0), H, W).sum() > 0
    np.testing.assert_array_equal(
        segmentation_mask({"size": [H, W], "counts": NEW}, H, W), rle.decode(NEW, H, W)
    )
