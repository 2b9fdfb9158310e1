"""Score a detector on a gold split (ANNOTATIONS rows): the number that decides whether a retrained SAM 3 is
promoted. Each gold image is decoded and encoded once, then queried with all its NPs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import pyarrow as pa

from conceptengine.engine.media import load_rgb
from conceptengine.model.metrics import SCORE_THRESHOLD, Metrics, PairGT, PairPred, saco_metrics
from conceptengine.model.sam3_backend import Sam3Detector


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
    """Run the detector on every gold pair. A gold image that cannot be read is an error: a gold set with
    holes would silently change what the metric measures."""
    rows = gold.to_pylist()
    by_media: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_media[r["media_id"]].append(r)
    gts: list[PairGT] = []
    preds: list[PairPred] = []
    for media_id in sorted(by_media):
        group = by_media[media_id]
        image = load_rgb(group[0]["uri"])
        h, w = image.shape[:2]
        dets = detector.detect(image, [r["noun_phrase"] for r in group], score_threshold=SCORE_THRESHOLD)
        for r, det in zip(group, dets):
            if (r["height"], r["width"]) != (h, w):
                raise ValueError(
                    f"gold pair {r['pair_id']}: {r['uri']} is {w}x{h}, the row says "
                    f"{r['width']}x{r['height']}"
                )
            masks = [] if r["is_negative"] else [m["rle"] for m in r["masks"] or []]
            gts.append(PairGT(r["pair_id"], h, w, masks, concept=r["noun_phrase"]))
            preds.append(PairPred(r["pair_id"], h, w, list(det.masks), list(det.scores)))
    return gts, preds
