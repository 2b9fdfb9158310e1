"""Export a run's committed dataset: SA-Co/Gold JSON, COCO instances JSON, or WebDataset shards."""

from __future__ import annotations

import json
import posixpath

import fsspec
import pyarrow as pa

from conceptengine.engine import rle
from conceptengine.engine.round_steps import Step
from conceptengine.engine.store import RunStore
from conceptengine.engine.tables import ANNOTATIONS
from conceptengine.model.saco_io import write_saco_gold
from conceptengine.round.commit import committed_shards

FORMATS = ("saco", "coco", "webdataset")


def committed_annotations(store: RunStore) -> pa.Table:
    """All rounds' annotations; a pair committed in two rounds keeps its latest version."""
    table = store.read_every_round(Step.COMMIT, "annotations", ANNOTATIONS)
    if table.num_rows == 0:
        return ANNOTATIONS.empty_table()
    latest: dict[str, dict] = {}
    for row in sorted(table.to_pylist(), key=lambda r: r["round"]):
        latest[row["pair_id"]] = row
    return pa.Table.from_pylist([latest[k] for k in sorted(latest)], schema=ANNOTATIONS)


def coco_instances(annotations: pa.Table) -> dict:
    """COCO detection JSON: one image per media, one category per noun phrase, masks as compressed RLE."""
    rows = annotations.to_pylist()
    images, image_ids = [], {}
    for row in sorted(rows, key=lambda r: r["media_id"]):
        if row["media_id"] not in image_ids:
            image_ids[row["media_id"]] = len(image_ids) + 1
            images.append(
                {
                    "id": image_ids[row["media_id"]],
                    "file_name": row["uri"],
                    "height": row["height"],
                    "width": row["width"],
                }
            )
    nps = sorted({r["noun_phrase"] for r in rows})
    cat_ids = {np_: i + 1 for i, np_ in enumerate(nps)}
    anns = []
    for row in rows:
        for m in row["masks"]:
            x0, y0, x1, y1 = m["box_xyxy"]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_ids[row["media_id"]],
                    "category_id": cat_ids[row["noun_phrase"]],
                    "segmentation": {"size": [row["height"], row["width"]], "counts": m["rle"]},
                    "area": rle.area(m["rle"], row["height"], row["width"]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": 0,
                }
            )
    return {
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": n} for n, i in cat_ids.items()],
    }


def export(run_url: str, fmt: str, out: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    store = RunStore.existing(run_url)
    annotations = committed_annotations(store)
    if fmt == "saco":
        write_saco_gold(annotations, out)
    elif fmt == "coco":
        with fsspec.open(out, "w") as f:
            json.dump(coco_instances(annotations), f)
    else:
        fs_out, root = fsspec.core.url_to_fs(out)
        fs_out.makedirs(root, exist_ok=True)
        # Numbered in round order, so a brace pattern (train-{000000..000041}.tar) reads them all.
        for k, shard in enumerate(committed_shards(store)):
            with (
                store.fs.open(shard, "rb") as src,
                fs_out.open(posixpath.join(root, f"train-{k:06d}.tar"), "wb") as dst,
            ):
                dst.write(src.read())
    return out
