"""One tiny verifier per test session: building it trains a tokenizer and saves weights (~2 s)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = ["red square", "blue triangle", "striped circle", "star"]


def square_mask(x0: int, y0: int, s: int, h: int = 60, w: int = 80) -> dict:
    """A proposal's mask entry: an s x s square at (x0, y0) in an h x w image."""
    import numpy as np

    from conceptengine.engine import rle

    m = np.zeros((h, w), dtype=bool)
    m[y0 : y0 + s, x0 : x0 + s] = True
    counts = rle.encode(m)
    return {"instance_id": None, "rle": counts, "box_xyxy": rle.box_xyxy(counts, h, w), "score": 0.9}


def proposals_table(root, pairs: list[tuple[str, list[dict]]]):
    """A PROPOSALS table of one random 80 x 60 image per (noun phrase, masks) pair, saved under `root`."""
    import numpy as np
    import pyarrow as pa
    from PIL import Image

    from conceptengine.engine.tables import PROPOSALS

    rng = np.random.default_rng(0)
    rows = []
    for k, (np_, masks) in enumerate(pairs):
        uri = root / f"img{k}.png"
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(uri)
        for i, m in enumerate(masks):
            m["instance_id"] = f"p{k}:{i:03d}"
        row = {"pair_id": f"p{k}", "media_id": f"m{k}", "uri": str(uri), "width": 80, "height": 60}
        row |= {"noun_phrase": np_, "node_id": None, "origin": "caption", "round": 1, "presence": 0.5}
        rows.append(row | {"masks": masks, "model_version": "sam3", "error": None})
    return pa.Table.from_pylist(rows, schema=PROPOSALS)


@pytest.fixture(scope="session")
def tiny_verifier_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    from conceptengine.verifiers.tiny import build_tiny_verifier

    return build_tiny_verifier(str(tmp_path_factory.mktemp("tiny_verifier") / "v0001"), VOCAB, seed=0)


@pytest.fixture(scope="session")
def backend(tiny_verifier_path: str):
    from conceptengine.verifiers.transformers_backend import TransformersBackend

    return TransformersBackend(tiny_verifier_path, batch_size=3)
