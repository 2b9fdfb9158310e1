"""A small but real run directory for the web tests: run.json, ingested PNG media and a filled queue.

Built with the engine's own store and queue (no stand-ins), so the server opens it exactly as it opens
a run the engine made; only the images are drawn here instead of by the rendered world.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from conceptengine.config import EngineConfig
from conceptengine.engine import ids, rle
from conceptengine.engine.store import RunStore, StepRef
from conceptengine.engine.tables import MEDIA
from conceptengine.review.queue import ReviewQueue
from conceptengine.review.types import TaskSpec

H, W = 24, 32


def square(x0: int, y0: int, size: int = 6) -> str:
    m = np.zeros((H, W), dtype=bool)
    m[y0 : y0 + size, x0 : x0 + size] = True
    return rle.encode(m)


def _image(i: int) -> np.ndarray:
    img = np.full((H, W, 3), 30 + 40 * i, dtype=np.uint8)
    img[4:10, 4 + 2 * i : 10 + 2 * i] = (220, 40, 40)
    return img


def build_run(root: Path, n_media: int = 3) -> tuple[Path, list[dict]]:
    """RUN with `n_media` ingested images; returns (run dir, media rows)."""
    run = root / "run"
    store = RunStore(str(run))
    cfg = EngineConfig()
    store.write_json(
        "run.json", {"config": cfg.model_dump(mode="json"), "config_hash": "t", "workspace": str(root)}
    )
    media = []
    for i in range(n_media):
        path = root / "pool" / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image(i)).save(path)
        media.append(
            {
                "media_id": ids.media_id_for_bytes(path.read_bytes()),
                "uri": str(path),
                "width": W,
                "height": H,
                "domain": "test",
                "split": "train",
                "error": None,
            }
        )
    store.write_step(StepRef(0, "ingest"), {"media": pa.Table.from_pylist(media, schema=MEDIA)}, "t", "f")
    return run, media


def _pair(m: dict, np_text: str) -> dict:
    return {k: m[k] for k in ("media_id", "uri", "height", "width")} | {"noun_phrase": np_text}


def fill_queue(run: Path, media: list[dict], round_index: int = 1, replicas: int = 1) -> dict[str, list[str]]:
    """Two MV, two EV and one correction task per image; returns task ids per kind (replica 0's).

    With `replicas` > 1, MV and EV items are asked that many times (consensus); corrections once."""
    q = ReviewQueue(str(run / "review.db"))
    specs = []
    for m in media:
        pid = ids.pair_id(m["media_id"], "red square")
        for k in range(2):
            counts = square(4 + 8 * k, 4)
            iid = ids.instance_id(pid, k)
            payload = _pair(m, "red square") | {
                "instance_id": iid,
                "rle": counts,
                "box_xyxy": rle.box_xyxy(counts, H, W),
            }
            specs.append(TaskSpec(kind="mv", round=round_index, subject_id=iid, pair_id=pid, payload=payload))
        given = [square(4, 4)]
        specs.append(
            TaskSpec(
                kind="ev",
                round=round_index,
                subject_id=pid,
                pair_id=pid,
                payload=_pair(m, "red square") | {"rles": given},
            )
        )
        pid2 = ids.pair_id(m["media_id"], "blue square")
        specs.append(
            TaskSpec(
                kind="ev",
                round=round_index,
                subject_id=pid2,
                pair_id=pid2,
                payload=_pair(m, "blue square") | {"rles": []},
            )
        )
        payload = _pair(m, "red square") | {"rles": given, "instance_ids": [ids.instance_id(pid, 0)]}
        specs.append(
            TaskSpec(kind="correction", round=round_index, subject_id=pid, pair_id=pid, payload=payload)
        )
    q.enqueue([s for s in specs if s.kind != "correction"], replicas=replicas)
    q.enqueue([s for s in specs if s.kind == "correction"])
    q.close()
    out: dict[str, list[str]] = {}
    for s in specs:
        out.setdefault(s.kind, []).append(s.task_id)
    return out
