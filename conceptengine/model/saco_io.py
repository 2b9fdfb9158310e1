"""SA-Co/Gold JSON and COCO-results files: one codec shared by the engine's export and its evaluation.

SA-Co/Gold is COCO-derived with one `images[]` entry per image-NP pair (`text_input` is the NP) and masks as
COCO compressed RLE. A negative pair is an image entry without annotations. Predictions use the COCO
results format: a flat list of {image_id, segmentation {counts, size}, score, category_id}.
"""

from __future__ import annotations

import json
import posixpath
from collections import defaultdict
from typing import Any

import fsspec
import pyarrow as pa
from pycocotools import mask as mask_utils

from conceptengine.engine import ids, rle
from conceptengine.engine.tables import ANNOTATIONS
from conceptengine.model.metrics import Metrics, PairGT, PairPred, saco_metrics


def _load_json(path: str) -> Any:
    try:
        with fsspec.open(path, "r") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def _dump_json(obj: Any, path: str) -> None:
    fs, root = fsspec.core.url_to_fs(path)
    parent = posixpath.dirname(root)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fsspec.open(path, "w") as f:
        json.dump(obj, f)


def _counts(seg: Any, height: int, width: int, where: str) -> str:
    """Validated compressed counts of a COCO segmentation at (height, width); uncompressed RLE is converted."""
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        raise ValueError(f"{where}: segmentation must be an RLE object {{counts, size}}; got {str(seg)[:80]}")
    if list(seg["size"]) != [height, width]:
        raise ValueError(
            f"{where}: segmentation size {seg['size']} differs from the image's [{height}, {width}]"
        )
    counts = seg["counts"]
    try:
        if isinstance(counts, list):
            counts = mask_utils.frPyObjects(seg, height, width)["counts"].decode("ascii")
        elif not isinstance(counts, str):
            raise TypeError(f"counts is a {type(counts).__name__}")
        mask_utils.area(rle.to_coco(counts, height, width))
    except Exception as exc:  # noqa: BLE001 - pycocotools raises bare errors on garbage
        raise ValueError(f"{where}: segmentation is not a valid RLE ({exc})") from None
    return counts


def _field(entry: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise ValueError(f"{where}: missing field {key!r}")
    if not isinstance(entry[key], kind) or isinstance(entry[key], bool) and kind is not bool:
        raise ValueError(f"{where}: field {key!r} has the wrong type ({type(entry[key]).__name__})")
    return entry[key]


def _parse_gold(path: str) -> tuple[list[dict], dict[Any, list[str]]]:
    doc = _load_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise ValueError(f"{path}: not an SA-Co/Gold file (no 'images' list at the top level)")  # noqa: TRY004 - a malformed file, reported as ValueError like every other
    annotations = doc.get("annotations", [])
    if not isinstance(annotations, list):
        raise ValueError(f"{path}: 'annotations' must be a list")  # noqa: TRY004 - a malformed file, reported as ValueError like every other
    images: dict[Any, dict] = {}
    for i, im in enumerate(doc["images"]):
        where = f"{path}: images[{i}]"
        im_id = _field(im, "id", (int, str), where)
        _field(im, "text_input", str, where)
        for k in ("height", "width"):
            if _field(im, k, int, where) <= 0:
                raise ValueError(f"{where}: {k} must be positive")
        if im_id in images:
            raise ValueError(f"{where}: duplicate image id {im_id!r}")
        images[im_id] = im
    masks: dict[Any, list[str]] = defaultdict(list)
    for j, ann in enumerate(annotations):
        where = f"{path}: annotations[{j}]"
        im_id = _field(ann, "image_id", (int, str), where)
        if im_id not in images:
            raise ValueError(f"{where}: image_id {im_id!r} is not in images[]")
        im = images[im_id]
        masks[im_id].append(
            _counts(_field(ann, "segmentation", dict, where), im["height"], im["width"], where)
        )
    return list(images.values()), masks


def read_saco_gold(path: str) -> list[PairGT]:
    images, masks = _parse_gold(path)
    return [
        PairGT(
            key=str(im["id"]),
            height=im["height"],
            width=im["width"],
            masks=masks.get(im["id"], []),
            concept=ids.normalize_np(im["text_input"]),
        )
        for im in images
    ]


def read_coco_results(path: str) -> list[PairPred]:
    doc = _load_json(path)
    if isinstance(doc, dict) and "annotations" in doc:  # tolerate a COCO file with an annotations list
        doc = doc["annotations"]
    if not isinstance(doc, list):
        raise ValueError(f"{path}: a COCO-results file must be a JSON list of predictions")  # noqa: TRY004 - a malformed file, reported as ValueError like every other
    by_key: dict[str, PairPred] = {}
    for i, p in enumerate(doc):
        where = f"{path}: [{i}]"
        im_id = _field(p, "image_id", (int, str), where)
        score = float(_field(p, "score", (int, float), where))
        seg = _field(p, "segmentation", dict, where)
        size = seg.get("size")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            raise ValueError(f"{where}: segmentation.size must be [height, width]")
        pred = by_key.setdefault(str(im_id), PairPred(key=str(im_id), height=size[0], width=size[1]))
        pred.masks.append(_counts(seg, pred.height, pred.width, where))
        pred.scores.append(score)
    return list(by_key.values())


def evaluate_files(gold_json_path: str, pred_json_path: str) -> Metrics:
    gold = read_saco_gold(gold_json_path)
    pred = read_coco_results(pred_json_path)
    gold_keys = {g.key: g for g in gold}
    for p in pred:
        g = gold_keys.get(p.key)
        if g is None:
            raise ValueError(f"{pred_json_path}: image_id {p.key} is not an image of {gold_json_path}")
        if (p.height, p.width) != (g.height, g.width):
            raise ValueError(
                f"{pred_json_path}: image_id {p.key} masks are {p.height}x{p.width}, "
                f"gold image is {g.height}x{g.width}"
            )
    return saco_metrics(gold, pred)


def read_saco_gold_annotations(path: str, images_root: str | None = None) -> pa.Table:
    """An SA-Co/Gold file as an ANNOTATIONS table; `file_name`s resolve against `images_root` (default: the
    JSON's folder). Images are read once to derive their content-hash media_id, as ingest does."""
    images, masks = _parse_gold(path)
    root = images_root if images_root is not None else posixpath.dirname(path)
    media_ids: dict[str, str] = {}
    rows = []
    for i, im in enumerate(images):
        file_name = _field(im, "file_name", str, f"{path}: images[{i}]")
        uri = (
            file_name if "://" in file_name or file_name.startswith("/") else posixpath.join(root, file_name)
        )
        if uri not in media_ids:
            try:
                with fsspec.open(uri, "rb") as f:
                    media_ids[uri] = ids.media_id_for_bytes(f.read())
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"{path}: images[{i}] file_name {file_name!r} not found at {uri}"
                ) from None
        media_id = media_ids[uri]
        pair = ids.pair_id(media_id, im["text_input"])
        h, w = im["height"], im["width"]
        gt = masks.get(im["id"], [])
        rows.append(
            {
                "pair_id": pair,
                "media_id": media_id,
                "uri": uri,
                "width": w,
                "height": h,
                "noun_phrase": ids.normalize_np(im["text_input"]),
                "masks": [
                    {
                        "instance_id": ids.instance_id(pair, k),
                        "rle": c,
                        "box_xyxy": rle.box_xyxy(c, h, w),
                        "score": 1.0,
                    }
                    for k, c in enumerate(gt)
                ],
                "is_exhaustive": bool(im.get("is_instance_exhaustive", True)),
                "is_negative": not gt,
                "provenance": "gold",
                "round": 0,
            }
        )
    return pa.Table.from_pylist(rows, schema=ANNOTATIONS)


def write_saco_gold(annotations: pa.Table, path: str) -> dict[str, int]:
    """Write ANNOTATIONS rows as SA-Co/Gold JSON; returns the image_id given to each pair_id.

    Image ids follow pair_id order, so the same annotations always give the same file.
    """
    missing = [
        c
        for c in ("pair_id", "uri", "width", "height", "noun_phrase", "masks", "is_exhaustive", "is_negative")
        if c not in annotations.column_names
    ]
    if missing:
        raise ValueError(f"write_saco_gold: annotations lack columns {missing}")
    rows = sorted(annotations.to_pylist(), key=lambda r: r["pair_id"])
    images, anns, image_id_by_pair = [], [], {}
    for image_id, r in enumerate(rows, start=1):
        if r["pair_id"] in image_id_by_pair:
            raise ValueError(f"write_saco_gold: pair {r['pair_id']} appears twice")
        image_id_by_pair[r["pair_id"]] = image_id
        h, w = int(r["height"]), int(r["width"])
        images.append(
            {
                "id": image_id,
                "file_name": r["uri"],
                "text_input": r["noun_phrase"],
                "height": h,
                "width": w,
                "is_instance_exhaustive": bool(r["is_exhaustive"]),
                "is_pixel_exhaustive": bool(r["is_exhaustive"]),
                "pair_id": r["pair_id"],
                "media_id": r.get("media_id"),
            }
        )
        for m in [] if r["is_negative"] else (r["masks"] or []):
            x, y, bw, bh = mask_utils.toBbox(rle.to_coco(m["rle"], h, w)).tolist()
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "bbox": [x / w, y / h, bw / w, bh / h],
                    "area": rle.area(m["rle"], h, w),
                    "segmentation": {"counts": m["rle"], "size": [h, w]},
                    "category_id": 1,
                    "iscrowd": 0,
                }
            )
    _dump_json({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}, path)
    return image_id_by_pair


def write_coco_results(rows: pa.Table | list[dict], path: str, image_id_by_pair: dict[str, int]) -> int:
    """Write proposals-like rows (pair_id, height, width, masks[rle, score], error) as COCO results.

    Rows with an `error` contribute nothing (the model saw nothing). Returns the number of predictions.
    """
    rows = rows.to_pylist() if isinstance(rows, pa.Table) else rows
    out = []
    for r in sorted(rows, key=lambda r: r["pair_id"]):
        if r["pair_id"] not in image_id_by_pair:
            raise ValueError(f"write_coco_results: pair {r['pair_id']} has no image_id in the gold file")
        if r.get("error"):
            continue
        for m in r["masks"] or []:
            out.append(
                {
                    "image_id": image_id_by_pair[r["pair_id"]],
                    "category_id": 1,
                    "score": float(m["score"]),
                    "segmentation": {"counts": m["rle"], "size": [int(r["height"]), int(r["width"])]},
                }
            )
    _dump_json(out, path)
    return len(out)
