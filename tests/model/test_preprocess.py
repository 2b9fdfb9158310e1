import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from conceptengine.engine import ids
from conceptengine.engine.stage import StageConfig, get_stage
from conceptengine.engine.tables import PAIRS
from conceptengine.model.preprocess import (
    DECODED,
    PIXELS,
    PIXELS_SHAPE,
    DecodeImages,
    PixelSpec,
    pixels_tensor,
)
from conceptengine.model.processing import Sam3PixelProcessor, load_sam3_inputs

from .conftest import rgb


def pairs_table(tmp_path: Path) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """Two images (one with three NPs, interleaved with the other), a corrupt file and a missing one."""
    images = {"a": rgb(60, 80, 1), "b": rgb(50, 50, 2)}
    media = {}
    for name, img in images.items():
        path = tmp_path / f"{name}.png"
        Image.fromarray(img).save(path)
        media[name] = (str(path), ids.media_id_for_bytes(path.read_bytes()), *img.shape[:2])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    media["bad"] = (str(bad), "bad", 10, 10)
    media["gone"] = (str(tmp_path / "gone.png"), "gone", 10, 10)
    order = [("a", "red square"), ("bad", "polygon"), ("b", "polygon"), ("a", "green star"), ("gone", "x")]
    order += [("a", "polygon")]
    rows = [
        {
            "pair_id": ids.pair_id(media[m][1], np_),
            "media_id": media[m][1],
            "uri": media[m][0],
            "width": media[m][3],
            "height": media[m][2],
            "noun_phrase": np_,
            "node_id": None,
            "origin": "ontology",
            "round": 1,
        }
        for m, np_ in order
    ]
    return pa.Table.from_pylist(rows, schema=PAIRS), images


def test_decode_images_schema_errors_and_dedup(tmp_path, tiny_sam3):
    batch, _ = pairs_table(tmp_path)
    stage = get_stage("decode_images")(StageConfig(), model_path=tiny_sam3)
    stage.setup()
    out = stage(batch)
    assert out.schema.equals(DECODED)
    assert out.column("pair_id").to_pylist() == batch.column("pair_id").to_pylist()  # order and keys kept
    assert out.select(PAIRS.names).equals(batch)
    rows = out.to_pylist()
    assert "corrupt media" in rows[1]["error"] and "cannot read" in rows[4]["error"]
    for i in (1, 4):
        assert rows[i][PIXELS] is None and rows[i][PIXELS_SHAPE] is None
    for i in (0, 2, 3, 5):
        assert rows[i]["error"] is None and rows[i][PIXELS_SHAPE] == [3, 112, 112]
    assert rows[0][PIXELS] == rows[3][PIXELS] == rows[5][PIXELS] != rows[2][PIXELS]
    # Each image's bytes are held once in the batch, however many NPs it has.
    assert len(out.column(PIXELS).combine_chunks().dictionary) == 2
    # A slice (Ray re-batching) still carries the pixels of every row.
    assert out.slice(3, 1).column(PIXELS).to_pylist()[0] == rows[0][PIXELS]
    assert stage(batch.slice(0, 0)).num_rows == 0


def test_pixels_equal_the_processor(tmp_path, tiny_sam3):
    cfg = json.loads(Path(tiny_sam3, "processor_config.json").read_text())["image_processor"]
    spec = PixelSpec.from_checkpoint(tiny_sam3)
    reference = load_sam3_inputs(tiny_sam3)
    for h, w, seed in ((60, 80, 1), (112, 112, 2), (301, 170, 3)):
        image = rgb(h, w, seed)
        resized = spec.resize(image)
        assert resized.dtype == np.uint8 and resized.shape == (3, 112, 112)
        mine = spec.normalize(pixels_tensor(resized.tobytes(), resized.shape))
        assert torch.equal(mine, Sam3PixelProcessor(cfg)(image)["pixel_values"])
        assert torch.equal(mine, reference.pixels(image))


def test_bad_params_and_inputs(tmp_path, tiny_sam3):
    with pytest.raises(ValueError, match="model_path"):
        DecodeImages(StageConfig())
    with pytest.raises(ValueError, match="unknown params"):
        DecodeImages(StageConfig(), model_path=tiny_sam3, size=3)
    with pytest.raises(FileNotFoundError, match="processor_config.json"):
        DecodeImages(StageConfig(), model_path=str(tmp_path)).setup()
    with pytest.raises(ValueError, match="bilinear"):
        PixelSpec.from_config({"resample": 3})
    with pytest.raises(ValueError, match="pixels_shape"):
        pixels_tensor(b"\x00" * 10, [3, 2, 2])
    with pytest.raises(KeyError, match="needs columns"):
        DecodeImages(StageConfig(), model_path=tiny_sam3)(pa.table({"x": [1]}))
