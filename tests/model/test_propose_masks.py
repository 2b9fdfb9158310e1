import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from conceptengine.engine import ids, rle
from conceptengine.engine.stage import StageConfig, get_stage
from conceptengine.engine.tables import PAIRS, PROPOSALS
from conceptengine.engine.media import CorruptMediaError, load_rgb
from conceptengine.model.propose_masks import ProposeMasks

from .conftest import rgb


def _media(tmp_path, name: str, h: int, w: int, seed: int) -> tuple[str, str]:
    path = tmp_path / name
    Image.fromarray(rgb(h, w, seed)).save(path)
    return str(path), ids.media_id_for_bytes(path.read_bytes())


def _pairs(items: list[tuple[str, str, int, int, str]]) -> pa.Table:
    rows = [
        {
            "pair_id": ids.pair_id(mid, np_),
            "media_id": mid,
            "uri": uri,
            "width": w,
            "height": h,
            "noun_phrase": np_,
            "node_id": None,
            "origin": "ontology",
            "round": 1,
        }
        for uri, mid, h, w, np_ in items
    ]
    return pa.Table.from_pylist(rows, schema=PAIRS)


def test_stage_groups_by_media_and_quarantines_corrupt_images(tmp_path, tiny_sam3):
    a, a_id = _media(tmp_path, "a.png", 60, 80, 1)
    b, b_id = _media(tmp_path, "b.png", 50, 50, 2)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    missing = str(tmp_path / "missing.png")
    batch = _pairs(
        [
            (a, a_id, 60, 80, "red square"),
            (str(bad), "bad", 10, 10, "red square"),
            (b, b_id, 50, 50, "polygon"),
            (a, a_id, 60, 80, "green star"),
            (missing, "gone", 10, 10, "polygon"),
            (a, a_id, 60, 80, "polygon"),
        ]
    )
    stage = get_stage("propose_masks")(StageConfig(), model_path=tiny_sam3, score_threshold=0.0, max_masks=3)
    stage.setup()
    encodes = []
    stage.detector.model.vision_encoder.register_forward_hook(lambda *_: encodes.append(1))
    out = stage(batch)

    assert out.schema.equals(PROPOSALS)
    assert (
        out.column("pair_id").to_pylist() == batch.column("pair_id").to_pylist()
    )  # one row per pair, in order
    assert len(encodes) == 2  # two readable images, each encoded once for all of its NPs
    rows = out.to_pylist()
    for i in (1, 4):
        assert rows[i]["error"] and rows[i]["masks"] == [] and rows[i]["presence"] is None
    assert "corrupt media" in rows[1]["error"] and "cannot read" in rows[4]["error"]
    for i in (0, 2, 3, 5):
        r = rows[i]
        assert r["error"] is None and r["model_version"] == stage.detector.version
        assert 0.0 <= r["presence"] <= 1.0
        assert 1 <= len(r["masks"]) <= 3
        assert [m["instance_id"] for m in r["masks"]] == [
            ids.instance_id(r["pair_id"], k) for k in range(len(r["masks"]))
        ]
        for m in r["masks"]:
            assert rle.decode(m["rle"], r["height"], r["width"]).any()
            assert len(m["box_xyxy"]) == 4 and 0.0 <= m["score"] <= 1.0

    # Re-running the same batch (a retried Ray task) gives the same table: the stage is idempotent.
    again = stage(batch)
    for c in out.column_names:
        assert again.column(c).equals(out.column(c)), c


def test_stage_marks_size_mismatch_and_validates_params(tmp_path, tiny_sam3):
    a, a_id = _media(tmp_path, "a.png", 40, 40, 3)
    stage = ProposeMasks(StageConfig(), model_path=tiny_sam3)
    out = stage(_pairs([(a, a_id, 30, 40, "polygon")])).to_pylist()
    assert "40x40" in out[0]["error"]
    with pytest.raises(ValueError, match="model_path"):
        ProposeMasks(StageConfig())
    with pytest.raises(ValueError, match="score_threshold"):
        ProposeMasks(StageConfig(), model_path=tiny_sam3, score_threshold=1.5)
    with pytest.raises(ValueError, match="max_masks"):
        ProposeMasks(StageConfig(), model_path=tiny_sam3, max_masks=0)
    with pytest.raises(ValueError, match="unknown params"):
        ProposeMasks(StageConfig(), model_path=tiny_sam3, treshold=0.3)


def test_load_rgb(tmp_path):
    p = tmp_path / "x.png"
    Image.fromarray(rgb(5, 7)).convert("L").save(p)
    img = load_rgb(str(p))
    assert img.shape == (5, 7, 3) and img.dtype == np.uint8
    trunc = tmp_path / "t.jpg"
    Image.fromarray(rgb(64, 64)).save(trunc, quality=90)
    trunc.write_bytes(trunc.read_bytes()[:200])
    with pytest.raises(CorruptMediaError) as exc:
        load_rgb(str(trunc))
    assert exc.value.uri == str(trunc) and str(trunc) in str(exc.value)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(CorruptMediaError, match="empty"):
        load_rgb(str(tmp_path / "empty.png"))
