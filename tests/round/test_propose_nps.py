"""select_media: each round takes the next images_per_round healthy train images, in media_id order."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pyarrow as pa

from conceptengine.engine.tables import MEDIA
from conceptengine.round.propose_nps import select_media

# media_id -> (split, error)
POOL = {f"m{i:02d}": ("train", None) for i in range(12)}
POOL |= {"m03": ("train", "corrupt"), "m05": ("gold", None), "m08": ("gold", "corrupt")}
HEALTHY_TRAIN = ["m00", "m01", "m02", "m04", "m06", "m07", "m09", "m10", "m11"]


def _ctx(n: int) -> SimpleNamespace:
    return SimpleNamespace(cfg=SimpleNamespace(rounds=SimpleNamespace(images_per_round=n)))


def _media() -> pa.Table:
    ids = list(POOL)
    random.Random(0).shuffle(ids)  # the ingest order is not the media_id order
    rows = [{"media_id": m, "uri": f"/p/{m}.png", "width": 4, "height": 4, "domain": "d", "split": POOL[m][0],
             "error": POOL[m][1]} for m in ids]  # fmt: skip
    return pa.Table.from_pylist(rows, MEDIA)


def test_rounds_take_consecutive_slices_of_healthy_train_media():
    media = _media()
    picked = [select_media(_ctx(4), media, r)["media_id"].to_pylist() for r in (1, 2, 3, 4)]
    assert picked == [HEALTHY_TRAIN[:4], HEALTHY_TRAIN[4:8], ["m11"], []]  # the last round is short


def test_selection_keeps_the_media_rows():
    chosen = select_media(_ctx(2), _media(), 2)
    assert chosen.schema == MEDIA
    assert chosen.to_pylist() == [
        {"media_id": m, "uri": f"/p/{m}.png", "width": 4, "height": 4, "domain": "d", "split": "train", "error": None}
        for m in ("m02", "m04")
    ]  # fmt: skip
