"""The correction page's tracker endpoint: clicks -> a real Sam3TrackerModel mask at the image's size.

The tracker here shares the shipped demo SAM 3's vision encoder and has an untrained prompt encoder and
mask decoder, so the tests check the plumbing (shapes, RLE, determinism, refinement changes the
answer), not mask quality.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import Sam3Model, Sam3TrackerModel

from conceptengine.engine import rle
from conceptengine.pipelines.demo import SHIPPED_SAM3
from tests.review.web.conftest import Site
from tests.review.web.run_builder import H, W


def test_tracker_checkpoint_loads_like_facebook_sam3(tracker_dir: str) -> None:
    cfg = json.loads((Path(tracker_dir) / "config.json").read_text())
    assert cfg["model_type"] == "sam3_tracker"
    proc = json.loads((Path(tracker_dir) / "processor_config.json").read_text())
    assert proc["processor_class"] == "Sam3TrackerProcessor"
    tracker = Sam3TrackerModel.from_pretrained(tracker_dir)
    detector = Sam3Model.from_pretrained(str(SHIPPED_SAM3))
    # SAM 3's tracker shares the detector's vision backbone: the weights are the detector's own.
    a = tracker.vision_encoder.state_dict()
    b = detector.vision_encoder.state_dict()
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def _correction(site: Site) -> dict:
    return site.client("bob").post("/api/lease", json={"kinds": ["correction"]}).json()["tasks"][0]


def test_clicks_give_an_rle_mask_that_a_correction_accepts(site: Site) -> None:
    bob = site.client("bob")
    task = _correction(site)
    url = f"/api/tasks/{task['task_id']}/segment"
    one = bob.post(url, json={"points": [[6, 6]]})
    assert one.status_code == 200, one.text
    out = one.json()
    mask = rle.decode(out["rle"], H, W)
    assert mask.shape == (H, W) and out["area"] == int(mask.sum())
    assert isinstance(out["score"], float)  # the tracker's own IoU estimate for the chosen mask
    assert bob.post(url, json={"points": [[6, 6]]}).json() == out  # same clicks, same mask
    refined = bob.post(url, json={"points": [[6, 6], [20, 12]], "labels": [1, 0]}).json()
    boxed = bob.post(url, json={"points": [[6, 6]], "box_xyxy": [2, 2, 12, 12]}).json()
    assert refined["rle"] != out["rle"] and boxed["rle"] != out["rle"]  # more prompts change the answer
    assert out["area"] > 0
    payload = {"add": [out["rle"]], "remove": []}
    done = bob.post(f"/api/tasks/{task['task_id']}/answer", json={"choice": "Done", "payload": payload})
    assert done.json()["status"] == "accepted"


def test_bad_clicks_are_422_naming_the_field(site: Site) -> None:
    bob = site.client("bob")
    task = _correction(site)
    url = f"/api/tasks/{task['task_id']}/segment"
    for body, starts in [
        ({"points": [[W, 3]]}, "points[0]:"),
        ({"points": [[-1, 3]]}, "points[0]:"),
        ({"points": []}, "points:"),
        ({"points": [[3, 3]], "labels": [1, 1]}, "labels: 2 labels for 1 points"),
        ({"points": [[3, 3]], "labels": [2]}, "labels: 2 is not"),
        ({"points": [[3, 3]], "labels": [0]}, "labels: at least one positive"),
        ({"points": [[3, 3]], "box_xyxy": [5, 5, 1, 1]}, "box_xyxy:"),
    ]:
        resp = bob.post(url, json=body)
        assert resp.status_code == 422 and resp.json()["detail"].startswith(starts), (body, resp.json())
    mv = bob.post("/api/lease", json={"kinds": ["mv"]}).json()["tasks"][0]
    resp = bob.post(f"/api/tasks/{mv['task_id']}/segment", json={"points": [[3, 3]]})
    assert resp.status_code == 422 and "only correction tasks" in resp.json()["detail"]
