import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from conceptengine.engine import ids, rle
from conceptengine.engine.media import CorruptMediaError, load_rgb
from conceptengine.engine.stage import StageConfig, get_stage
from conceptengine.engine.tables import PAIRS, PROPOSALS
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
            assert 0.0 <= m["score"] <= 1.0
            # the instance is its mask: its box is the mask's, not the box head's (verifiers crop by it)
            assert m["box_xyxy"] == rle.box_xyxy(m["rle"], r["height"], r["width"])

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


def test_decoded_pixels_give_identical_rows_and_errors_pass_through(tmp_path, tiny_sam3):
    from conceptengine.model.preprocess import DecodeImages

    a, a_id = _media(tmp_path, "a.png", 60, 80, 1)
    b, b_id = _media(tmp_path, "b.png", 50, 50, 2)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"<html>404</html>")
    batch = _pairs(
        [
            (a, a_id, 60, 80, "red square"),
            (b, b_id, 50, 50, "polygon"),
            (str(bad), "bad", 10, 10, "polygon"),
            (a, a_id, 60, 80, "green star"),
            (b, b_id, 50, 50, "striped circle"),
        ]
    )
    stage = ProposeMasks(StageConfig(), model_path=tiny_sam3, score_threshold=0.2, max_masks=5)
    decode = DecodeImages(StageConfig(), model_path=tiny_sam3)
    decoded = decode(batch)
    direct = stage(batch)
    via = stage(decoded)
    assert via.schema.equals(PROPOSALS)
    for c in PROPOSALS.names:
        assert via.column(c).equals(direct.column(c)), c
    assert sum(len(m) for m in via.column("masks").to_pylist()) > 0  # the comparison covers real masks
    assert "corrupt media" in via.column("error")[2].as_py()
    # Batches cut through an image's rows (Ray re-batching) give the same rows up to float rounding: the
    # NPs then share a forward with different neighbours, and batched kernels may round differently.
    pieces = pa.concat_tables([stage(decoded.slice(0, 2)), stage(decoded.slice(2))]).to_pylist()
    for p, d in zip(pieces, direct.to_pylist()):
        assert p["error"] == d["error"] and len(p["masks"]) == len(d["masks"])
        assert p["presence"] == pytest.approx(d["presence"], abs=1e-5)
        for pm, dm in zip(p["masks"], d["masks"]):
            assert pm["score"] == pytest.approx(dm["score"], abs=1e-5)
            iou = rle.iou_matrix([pm["rle"]], [dm["rle"]], p["height"], p["width"])[0, 0]
            assert iou > 0.98
    # An error set upstream is kept verbatim, and its pixels are never used.
    marked = decoded.set_column(
        decoded.schema.get_field_index("error"),
        "error",
        pa.array([None, "upstream says no", None, None, None]),
    )
    rows = stage(marked).to_pylist()
    assert rows[1]["error"] == "upstream says no" and rows[4]["error"] == "upstream says no"
    assert rows[0]["error"] is None and rows[0]["masks"] == direct.to_pylist()[0]["masks"]


def test_text_cache_is_shared_across_batches_and_bounded(tmp_path, tiny_sam3):
    a, a_id = _media(tmp_path, "a.png", 40, 40, 4)
    b, b_id = _media(tmp_path, "b.png", 40, 40, 5)
    stage = ProposeMasks(StageConfig(), model_path=tiny_sam3, text_cache_size=2)
    stage(_pairs([(a, a_id, 40, 40, "red square"), (a, a_id, 40, 40, "polygon")]))
    info = stage.detector.cache_info()
    assert (info["misses"], info["hits"], info["size"]) == (2, 0, 2)
    # The same NPs on another image, one spelled differently: all hits, nothing encoded again.
    stage(_pairs([(b, b_id, 40, 40, "Red  Square"), (b, b_id, 40, 40, "polygon")]))
    info = stage.detector.cache_info()
    assert (info["misses"], info["hits"]) == (2, 2)
    # A third NP evicts the least recently used one ("red square" was used before "polygon").
    stage(_pairs([(b, b_id, 40, 40, "polygon"), (b, b_id, 40, 40, "green star")]))
    assert list(stage.detector._text_cache) == ["polygon", "green star"]
    assert stage.detector.cache_info()["size"] == 2
    with pytest.raises(ValueError, match="text_cache_size"):
        ProposeMasks(StageConfig(), model_path=tiny_sam3, text_cache_size=0)
    with pytest.raises(ValueError, match="np_batch_size"):
        ProposeMasks(StageConfig(), model_path=tiny_sam3, np_batch_size=0)
