"""select_media: each round takes the next images_per_round healthy train images, in media_id order, whether the
media table is in memory or in the ingest step's files (read a file at a time)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pyarrow as pa
import pytest

from conceptengine.engine.block_files import write_block
from conceptengine.engine.steps import StepResult
from conceptengine.engine.store import RunStore, StepRef
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


def _stored(media: pa.Table, tmp_path) -> StepResult:
    """The media table as an ingest step's block files, three rows a file."""
    store, ref = RunStore(str(tmp_path / "run")), StepRef(0, "ingest")
    files = [
        write_block(store.url_for(ref.rel), "media", media.slice(i, 3)) for i in range(0, media.num_rows, 3)
    ]
    manifest = store.write_block_step(ref, {"media": files}, "cfg", "fp", {})
    return StepResult(ref, {}, manifest, reused=False, store=store)


@pytest.mark.parametrize("where", ["memory", "files"])
def test_rounds_take_consecutive_slices_of_healthy_train_media(where, tmp_path):
    media = StepResult(StepRef(0, "ingest"), {"media": _media()}, {}, False)
    if where == "files":
        media = _stored(_media(), tmp_path)
    picked = [select_media(_ctx(4), media, r)["media_id"].to_pylist() for r in (1, 2, 3, 4)]
    assert picked == [HEALTHY_TRAIN[:4], HEALTHY_TRAIN[4:8], ["m11"], []]  # the last round is short


def test_selection_keeps_the_media_rows():
    chosen = select_media(_ctx(2), StepResult(StepRef(0, "ingest"), {"media": _media()}, {}, False), 2)
    assert chosen.schema == MEDIA
    assert chosen.to_pylist() == [
        {"media_id": m, "uri": f"/p/{m}.png", "width": 4, "height": 4, "domain": "d", "split": "train", "error": None}
        for m in ("m02", "m04")
    ]  # fmt: skip
