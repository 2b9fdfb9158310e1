"""COMMIT: the round's decisions become the dataset: annotations (Parquet), WebDataset shards, verdicts.

Files get deterministic names (a redone commit overwrites the same files) and the step's manifest is
written last, so a crash mid-commit never leaves a half-committed round that looks finished.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pyarrow as pa
import webdataset as wds

from conceptengine.engine.media import read_bytes
from conceptengine.engine.round_steps import Step
from conceptengine.engine.steps import StepResult, run_step
from conceptengine.engine.store import RunStore, StepRef
from conceptengine.engine.tables import VERDICTS
from conceptengine.review.answers import EV_CHOICES, MV_CHOICES
from conceptengine.round.annotations import build_annotations
from conceptengine.round.context import RunContext

SHARD_MAX_IMAGES = 1000


def ai_verdicts(routed: pa.Table, r: int) -> pa.Table:
    rows = []
    for row in routed.to_pylist():
        annotator = f"ai:{row['verifier_version']}"
        for mask, probs in zip(row["masks"], row["mv_probs"] or [], strict=False):
            rows.append(_verdict(mask["instance_id"], row["pair_id"], "mv", annotator, MV_CHOICES, probs, r))
        if row["ev_probs"] is not None:
            rows.append(
                _verdict(row["pair_id"], row["pair_id"], "ev", annotator, EV_CHOICES, row["ev_probs"], r)
            )
    return pa.Table.from_pylist(rows, schema=VERDICTS)


def _verdict(subject, pair, task, annotator, choices, probs, r) -> dict:
    return {
        "subject_id": subject,
        "pair_id": pair,
        "task": task,
        "annotator": annotator,
        "choice": choices[int(np.argmax(probs))],
        "probs": list(probs),
        "seconds": 0.0,
        "round": r,
    }


def committed_shards(store: RunStore, up_to_round: int | None = None) -> list[str]:
    """The WebDataset shards the finished COMMIT steps list (of rounds <= up_to_round), in round order."""
    return [
        store.url_for(rel)
        for r in store.rounds_with(Step.COMMIT)
        if up_to_round is None or r <= up_to_round
        for rel in store.manifest(StepRef(r, Step.COMMIT)).get("extra", {}).get("shards", [])
    ]


def write_shards(ctx: RunContext, annotations: pa.Table, r: int) -> list[str]:
    """One sample per image: the image bytes and all of its committed NPs with their masks."""
    by_media: dict[str, list[dict]] = defaultdict(list)
    for row in annotations.to_pylist():
        by_media[row["media_id"]].append(row)
    media_ids = sorted(by_media)
    written = []
    for k in range(0, max(len(media_ids), 1), SHARD_MAX_IMAGES):
        chunk = media_ids[k : k + SHARD_MAX_IMAGES]
        if not chunk:
            break
        rel = f"shards/train-{r:04d}{k // SHARD_MAX_IMAGES:02d}.tar"
        # A fixed mtime: a redone commit writes the same bytes.
        with ctx.store.open_atomic(rel) as f, wds.TarWriter(f, mtime=0) as sink:
            for media_id in chunk:
                sink.write(_sample(media_id, by_media[media_id]))
        written.append(rel)
    return written


def _sample(media_id: str, rows: list[dict]) -> dict:
    first = rows[0]
    image = read_bytes(first["uri"])
    ext = first["uri"].rsplit(".", 1)[-1].lower() if "." in first["uri"] else "png"
    meta = {
        "media_id": media_id,
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
            for r in sorted(rows, key=lambda r: r["pair_id"])
        ],
    }
    return {"__key__": media_id, ext: image, "json": json.dumps(meta).encode()}


def commit_round(ctx: RunContext, r: int, routed: StepResult, review: StepResult) -> StepResult:
    def compute():
        annotations = build_annotations(routed["routed"], review["decisions"], r)
        verdicts = pa.concat_tables([ai_verdicts(routed["routed"], r), review["verdicts"]])
        ctx.store.write_parquet(f"annotations/round={r:04d}/part-00000.parquet", annotations)
        ctx.store.write_parquet(f"verdicts/round={r:04d}/part-00000.parquet", verdicts)
        shards = write_shards(ctx, annotations, r)
        negatives = sum(annotations["is_negative"].to_pylist())
        extra = {
            "committed_pairs": annotations.num_rows,
            "committed_negative": negatives,
            "committed_masks": sum(len(m) for m in annotations["masks"].to_pylist()),
            "shards": shards,
        }
        return {"annotations": annotations, "verdicts": verdicts}, extra

    return run_step(
        ctx,
        StepRef(r, Step.COMMIT),
        [routed.fingerprint, review.fingerprint],
        ["annotations", "verdicts"],
        compute,
    )
