"""Score a detector on a gold split (ANNOTATIONS rows): the number that decides whether a retrained SAM 3 is
promoted. Each gold image is decoded and encoded once, then queried with all its NPs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa

from conceptengine.engine.media import load_rgb
from conceptengine.model.metrics import SCORE_THRESHOLD, Metrics, PairGT, PairPred, saco_metrics
from conceptengine.model.sam3_backend import Detection, Sam3Detector


def evaluate_detector(detector: Sam3Detector, gold: pa.Table) -> Metrics:
    """cgF1 / IL_MCC / pmF1 of `detector` on `gold`."""
    return saco_metrics(*predict_gold(detector, gold))


def evaluate_by_group(
    detector: Sam3Detector, gold: pa.Table, group_of: Callable[[str], str | None]
) -> tuple[Metrics, dict[str, Metrics]]:
    """Overall metrics plus metrics per group of NPs (e.g. per ontology concept, or held-out vs. seen);
    `group_of(noun_phrase)` names a pair's group, None leaves it out of every group. One detector pass."""
    gts, preds = predict_gold(detector, gold)
    groups: dict[str, list[PairGT]] = defaultdict(list)
    for g in gts:
        name = group_of(g.concept or "")
        if name is not None:
            groups[name].append(g)
    by_key = {p.key: p for p in preds}
    per_group = {name: saco_metrics(gs, [by_key[g.key] for g in gs]) for name, gs in sorted(groups.items())}
    return saco_metrics(gts, preds), per_group


def predict_gold(detector: Sam3Detector, gold: pa.Table) -> tuple[list[PairGT], list[PairPred]]:
    """Run the detector on every gold pair."""
    gts: list[PairGT] = []
    preds: list[PairPred] = []
    for image, group in gold_images(gold):
        dets = detector.detect(image, [r["noun_phrase"] for r in group], score_threshold=SCORE_THRESHOLD)
        gts += [pair_truth(r, image) for r in group]
        preds += [pair_prediction(r, det) for r, det in zip(group, dets, strict=True)]
    return gts, preds


def gold_images(gold: pa.Table) -> Iterator[tuple[np.ndarray, list[dict]]]:
    """Each gold image, decoded once, with its rows (in media_id order). A gold image that cannot be read is
    an error: a gold set with holes would silently change what the metric measures."""
    by_media: dict[str, list[dict]] = defaultdict(list)
    for r in gold.to_pylist():
        by_media[r["media_id"]].append(r)
    for media_id in sorted(by_media):
        group = by_media[media_id]
        yield load_rgb(group[0]["uri"]), group


def pair_truth(row: dict, image: np.ndarray) -> PairGT:
    """A gold row's ground truth; its recorded size must be the image's."""
    h, w = image.shape[:2]
    if (row["height"], row["width"]) != (h, w):
        raise ValueError(
            f"gold pair {row['pair_id']}: {row['uri']} is {w}x{h}, the row says {row['width']}x{row['height']}"
        )
    masks = [] if row["is_negative"] else [m["rle"] for m in row["masks"] or []]
    return PairGT(row["pair_id"], h, w, masks, concept=row["noun_phrase"])


def pair_prediction(row: dict, det: Detection) -> PairPred:
    return PairPred(row["pair_id"], row["height"], row["width"], list(det.masks), list(det.scores))
