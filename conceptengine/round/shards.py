"""The committed round as WebDataset shards: one sample per image, holding the image bytes and every committed
NP of it with its masks. The commit's workers build the samples (one per group of an image's annotation rows)
and write them, about SHARD_MAX_IMAGES to a tar named by its content, like a block file
(engine/block_files.py): a redone commit writes the same names, and only the files its manifest lists count.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import webdataset as wds

from conceptengine.engine.block_files import part_name
from conceptengine.engine.media import read_bytes
from conceptengine.engine.store import RunStore

SHARD_MAX_IMAGES = 1000
SHARDS = "shards"  # the commit step's folder of tars, and their name in its manifest

SAMPLE = pa.schema(
    [("media_id", pa.string()), ("ext", pa.string()), ("image", pa.binary()), ("json", pa.binary())]
)


def shard_sample(rows: pa.Table) -> pa.Table:
    """One image's ANNOTATIONS rows -> its one SAMPLE row."""
    pairs = sorted(rows.to_pylist(), key=lambda r: r["pair_id"])
    first = pairs[0]
    uri = first["uri"]
    meta = {
        "media_id": first["media_id"],
        "width": first["width"],
        "height": first["height"],
        "pairs": [
            {
                "pair_id": r["pair_id"],
                "noun_phrase": r["noun_phrase"],
                "is_negative": r["is_negative"],
                "is_exhaustive": r["is_exhaustive"],
                "masks": [{"rle": m["rle"], "box_xyxy": list(m["box_xyxy"])} for m in r["masks"]],
            }
            for r in pairs
        ],
    }
    sample = {
        "media_id": first["media_id"],
        "ext": uri.rsplit(".", 1)[-1].lower() if "." in uri else "png",
        "image": read_bytes(uri),
        "json": json.dumps(meta).encode(),
    }
    return pa.Table.from_pylist([sample], schema=SAMPLE)


def write_shard(step_url: str, samples: pa.Table) -> list[dict]:
    """Write SAMPLE rows as one tar in the step folder at `step_url`; returns its manifest record."""
    buffer = io.BytesIO()
    with wds.TarWriter(buffer, mtime=0) as sink:  # a fixed mtime: the same samples give the same bytes
        for s in sorted(samples.to_pylist(), key=lambda s: s["media_id"]):
            sink.write({"__key__": s["media_id"], s["ext"]: s["image"], "json": s["json"]})
    data = buffer.getvalue()
    rel = part_name(SHARDS, data, ".tar")
    with RunStore(step_url).open_atomic(rel) as f:
        f.write(data)
    return [{"table": SHARDS, "file": rel, "rows": samples.num_rows, "lists": {}}]
