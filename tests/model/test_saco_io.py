import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from conceptengine.engine import ids, rle
from conceptengine.engine.tables import ANNOTATIONS
from conceptengine.model.evaluate import evaluate_detector
from conceptengine.model.saco_io import (
    evaluate_files,
    read_coco_results,
    read_saco_gold,
    read_saco_gold_annotations,
    write_coco_results,
    write_saco_gold,
)

from .conftest import rgb


def _annotations(tmp_path) -> pa.Table:
    """Two images; image a has a positive pair (2 instances) and a negative pair, image b one positive."""
    rows = []
    for name, h, w, nps in [("a.png", 30, 40, ["red square", "green star"]), ("b.png", 20, 20, ["polygon"])]:
        path = tmp_path / name
        Image.fromarray(rgb(h, w, seed=len(rows))).save(path)
        media = ids.media_id_for_bytes(path.read_bytes())
        for np_ in nps:
            pair = ids.pair_id(media, np_)
            masks = []
            if np_ != "green star":
                for k, (y0, x0) in enumerate([(2, 3), (10, 12)][: 2 if name == "a.png" else 1]):
                    m = np.zeros((h, w), dtype=bool)
                    m[y0 : y0 + 6, x0 : x0 + 5] = True
                    c = rle.encode(m)
                    masks.append(
                        {
                            "instance_id": ids.instance_id(pair, k),
                            "rle": c,
                            "box_xyxy": rle.box_xyxy(c, h, w),
                            "score": 1.0,
                        }
                    )
            rows.append(
                {
                    "pair_id": pair,
                    "media_id": media,
                    "uri": str(path),
                    "width": w,
                    "height": h,
                    "noun_phrase": np_,
                    "masks": masks,
                    "is_exhaustive": True,
                    "is_negative": not masks,
                    "provenance": "gold",
                    "round": 0,
                }
            )
    return pa.Table.from_pylist(rows, schema=ANNOTATIONS)


def test_gold_round_trip_decodes_with_pycocotools(tmp_path):
    ann = _annotations(tmp_path)
    path = str(tmp_path / "out" / "gold.json")
    image_ids = write_saco_gold(ann, path)
    doc = json.loads(Path(path).read_text())
    assert len(doc["images"]) == 3 and len(doc["annotations"]) == 3  # the negative pair has no annotations
    by_pair = {r["pair_id"]: r for r in ann.to_pylist()}
    for a in doc["annotations"]:
        im = next(i for i in doc["images"] if i["id"] == a["image_id"])
        row = by_pair[im["pair_id"]]
        decoded = mask_utils.decode(
            {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
        )
        assert decoded.shape == (im["height"], im["width"]) and a["category_id"] == 1 and a["iscrowd"] == 0
        assert any(
            np.array_equal(decoded.astype(bool), rle.decode(m["rle"], row["height"], row["width"]))
            for m in row["masks"]
        )
        assert a["area"] == int(decoded.sum()) == 30
        _, _, bw, bh = a["bbox"]  # normalized xywh: 5x6 boxes
        assert bw * im["width"] == pytest.approx(5) and bh * im["height"] == pytest.approx(6)
        assert im["text_input"] == row["noun_phrase"] and im["is_instance_exhaustive"] is True
    # The same annotations always give the same file.
    assert write_saco_gold(ann, str(tmp_path / "again.json")) == image_ids
    assert (tmp_path / "again.json").read_text() == Path(path).read_text()

    gold = read_saco_gold(path)
    assert sorted(len(g.masks) for g in gold) == [0, 1, 2]
    table = read_saco_gold_annotations(path)  # file_name is absolute here
    assert sorted(table.column("pair_id").to_pylist()) == sorted(ann.column("pair_id").to_pylist())
    assert table.schema.equals(ANNOTATIONS)


def test_predictions_round_trip_and_score(tmp_path):
    ann = _annotations(tmp_path)
    gold_path, pred_path = str(tmp_path / "gold.json"), str(tmp_path / "pred.json")
    image_ids = write_saco_gold(ann, gold_path)
    # Predict the gold masks exactly, plus a low-score (ignored) mask on the negative pair.
    rows = [
        {
            "pair_id": r["pair_id"],
            "height": r["height"],
            "width": r["width"],
            "error": None,
            "masks": [{"rle": m["rle"], "score": 0.9} for m in r["masks"]]
            or [{"rle": rle.encode(np.ones((r["height"], r["width"]), bool)), "score": 0.2}],
        }
        for r in ann.to_pylist()
    ]
    rows.append({"pair_id": "x", "height": 1, "width": 1, "error": "corrupt", "masks": []})
    with pytest.raises(ValueError, match="no image_id"):
        write_coco_results(rows, pred_path, image_ids)
    assert write_coco_results(rows[:-1], pred_path, image_ids) == 4
    assert len(read_coco_results(pred_path)) == 3
    # Perfect on the positives, nothing confident on the negative: pmF1 1, IL MCC 1 -> cgF1 100.
    m = evaluate_files(gold_path, pred_path)
    assert (m.cgF1, m.pmF1, m.IL_MCC) == (100.0, 1.0, 1.0)


def test_malformed_files_name_the_file_and_entry(tmp_path):
    ann = _annotations(tmp_path)
    gold_path = str(tmp_path / "gold.json")
    write_saco_gold(ann, gold_path)
    doc = json.loads(Path(gold_path).read_text())

    def write(name, obj):
        p = tmp_path / name
        p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return str(p)

    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        read_saco_gold(write("bad.json", "{nope"))
    with pytest.raises(FileNotFoundError, match="nothere"):
        read_saco_gold(str(tmp_path / "nothere.json"))
    broken = json.loads(json.dumps(doc))
    del broken["images"][1]["height"]
    with pytest.raises(ValueError, match=r"g1\.json: images\[1\]: missing field 'height'"):
        read_saco_gold(write("g1.json", broken))
    broken = json.loads(json.dumps(doc))
    broken["annotations"][2]["image_id"] = 999
    with pytest.raises(ValueError, match=r"annotations\[2\]: image_id 999"):
        read_saco_gold(write("g2.json", broken))
    broken = json.loads(json.dumps(doc))
    broken["annotations"][0]["segmentation"]["size"] = [1, 1]
    with pytest.raises(ValueError, match=r"annotations\[0\]: segmentation size"):
        read_saco_gold(write("g3.json", broken))
    with pytest.raises(ValueError, match=r"p1\.json: \[0\]: missing field 'score'"):
        read_coco_results(write("p1.json", [{"image_id": 1, "segmentation": {"counts": "", "size": [1, 1]}}]))
    stray = [
        {
            "image_id": 777,
            "score": 0.9,
            "category_id": 1,
            "segmentation": {"counts": rle.encode(np.ones((2, 2), bool)), "size": [2, 2]},
        }
    ]
    with pytest.raises(ValueError, match="image_id 777 is not an image of"):
        evaluate_files(gold_path, write("p2.json", stray))
    with pytest.raises(ValueError, match="not an SA-Co/Gold file"):
        read_saco_gold(write("g4.json", [1, 2]))


def test_evaluate_detector_agrees_with_the_file_path(tmp_path, detector):
    ann = _annotations(tmp_path)
    m = evaluate_detector(detector, ann)
    assert m.counts["pairs"] == 3 and m.counts["positive_pairs"] == 2
    # Same detections through the export codec and the CLI's evaluator give the same numbers.
    gold_path, pred_path = str(tmp_path / "g.json"), str(tmp_path / "p.json")
    image_ids = write_saco_gold(ann, gold_path)
    rows = []
    for r in ann.to_pylist():
        from conceptengine.engine.media import load_rgb

        det = detector.detect(load_rgb(r["uri"]), [r["noun_phrase"]], score_threshold=0.5)[0]
        rows.append(
            {
                "pair_id": r["pair_id"],
                "height": r["height"],
                "width": r["width"],
                "error": None,
                "masks": [{"rle": c, "score": s} for c, s in zip(det.masks, det.scores)],
            }
        )
    write_coco_results(rows, pred_path, image_ids)
    f = evaluate_files(gold_path, pred_path)
    assert (f.cgF1, f.IL_MCC, f.pmF1) == (m.cgF1, m.IL_MCC, m.pmF1)
    assert f.counts["il_tp"] + f.counts["il_fn"] == 2
