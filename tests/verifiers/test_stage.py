from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import conceptengine.verifiers.stage as stage_mod
from conceptengine.engine import rle
from conceptengine.engine.stage import StageConfig, get_stage
from conceptengine.engine.tables import PROPOSALS
from conceptengine.verifiers import choices


def _mask(h: int, w: int, x0: int, y0: int, s: int) -> dict:
    m = np.zeros((h, w), dtype=bool)
    m[y0 : y0 + s, x0 : x0 + s] = True
    counts = rle.encode(m)
    return {"instance_id": None, "rle": counts, "box_xyxy": rle.box_xyxy(counts, h, w), "score": 0.9}


def _row(uri: str, np_: str, masks: list[dict], w: int = 80, h: int = 60, error: str | None = None) -> dict:
    pid = f"{Path(uri).stem}-{np_}"
    for i, m in enumerate(masks):
        m["instance_id"] = f"{pid}:{i:03d}"
    return dict(  # noqa: C408 - keyword form reads like the schema
        pair_id=pid, media_id=Path(uri).stem, uri=uri, width=w, height=h, noun_phrase=np_, node_id=None,
        origin="caption", round=1, presence=0.5, masks=masks, model_version="sam3-tiny", error=error,
    )  # fmt: skip


@pytest.fixture
def proposals(tmp_path: Path) -> pa.Table:
    rng = np.random.default_rng(0)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(a)
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(b)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    rows = [
        _row(str(a), "red square", [_mask(60, 80, 5, 5, 10), _mask(60, 80, 40, 30, 12)]),
        _row(str(a), "blue triangle", []),  # a negative pair: EV only, on the plain image
        _row(str(b), "star", [_mask(60, 80, 20, 20, 8)]),
        _row(str(a), "star", [_mask(60, 80, 1, 1, 5)], error="sam3: out of memory"),  # arrives failed
        _row(str(tmp_path / "corrupt.png"), "star", [_mask(60, 80, 1, 1, 5)]),
        _row(str(tmp_path / "missing.png"), "star", []),
        _row(str(b), "wrong size", [], w=81),
        _row(str(b), "no rle", [{**_mask(60, 80, 1, 1, 5), "rle": None}]),  # malformed input row
    ]
    return pa.Table.from_pylist(rows, schema=PROPOSALS)


def test_ai_verify_stage_on_a_small_table(proposals: pa.Table, tiny_verifier_path: str, monkeypatch) -> None:
    decoded: list[str] = []
    real_load = stage_mod.load_rgb

    def counting_load(uri: str, width: int | None = None, height: int | None = None) -> np.ndarray:
        decoded.append(uri)
        return real_load(uri, width, height)

    monkeypatch.setattr(stage_mod, "load_rgb", counting_load)
    stage = get_stage("ai_verify")(StageConfig(), model_path=tiny_verifier_path, view_size=112)
    stage.setup()
    out = stage(proposals)

    assert out.schema.equals(stage_mod.VERIFIED)
    assert out.column_names == list(stage.output_columns)
    assert out.num_rows == proposals.num_rows
    assert (
        sorted(decoded) == sorted(set(decoded)) and len(decoded) == 4
    )  # a.png once for 3 rows, b.png once for 2
    rows = out.to_pylist()

    ok = rows[:3]
    assert [len(r["mv_probs"]) for r in ok] == [2, 0, 1]
    for r in ok:
        assert r["error"] is None and r["verifier_version"] == "v0001"
        assert len(r["ev_probs"]) == len(choices.EV)
        assert abs(sum(r["ev_probs"]) - 1) < 1e-5
        for p in r["mv_probs"]:
            assert len(p) == len(choices.MV) and abs(sum(p) - 1) < 1e-5

    # the row that arrived with an error passes through untouched, with null verifier outputs
    assert rows[3]["error"] == "sam3: out of memory"
    assert {k: rows[3][k] for k in PROPOSALS.names} == proposals.slice(3, 1).to_pylist()[0]
    assert rows[3]["mv_probs"] is None and rows[3]["ev_probs"] is None and rows[3]["verifier_version"] is None

    assert "corrupt media" in rows[4]["error"] and "corrupt.png" in rows[4]["error"]
    assert "cannot read image" in rows[5]["error"] and "missing.png" in rows[5]["error"]
    assert "81x60" in rows[6]["error"]
    assert "rle must be a COCO RLE counts string" in rows[7]["error"]
    for r in rows[4:]:
        assert r["error"].startswith("ai_verify:") and r["mv_probs"] is None and r["ev_probs"] is None


def test_scores_do_not_depend_on_batch_company(proposals: pa.Table, tiny_verifier_path: str) -> None:
    stage = get_stage("ai_verify")(StageConfig(), model_path=tiny_verifier_path, infer_batch_size=2)
    verified = stage(proposals)
    assert stage(verified).schema.equals(stage_mod.VERIFIED)  # re-running replaces, never duplicates
    full = verified.to_pylist()
    alone = stage(proposals.slice(2, 1)).to_pylist()[0]
    np.testing.assert_allclose(full[2]["mv_probs"], alone["mv_probs"], atol=1e-5)
    np.testing.assert_allclose(full[2]["ev_probs"], alone["ev_probs"], atol=1e-5)


def test_bad_params_name_the_field(tiny_verifier_path: str) -> None:
    cls = get_stage("ai_verify")
    with pytest.raises(ValueError, match=r"stage 'ai_verify' params: view_size"):
        cls(StageConfig(), model_path=tiny_verifier_path, view_size=2)
    with pytest.raises(ValueError, match=r"unknown params 'model_pth'"):
        cls(StageConfig(), model_pth=tiny_verifier_path)
    with pytest.raises(ValueError, match=r"model_path: Field required"):
        cls(StageConfig())
    with pytest.raises(FileNotFoundError, match="model_path"):
        cls(StageConfig(), model_path="/nonexistent/verifier").setup()
