"""committed_quality: precision / recall / pair_precision / negative_precision against a fake ground truth."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from conceptengine.engine import rle
from conceptengine.engine.tables import ANNOTATIONS
from conceptengine.round.evaluate import committed_quality

S = 8


def _rle(r0: int, c0: int, h: int = 4, w: int = 4) -> str:
    m = np.zeros((S, S), dtype=bool)
    m[r0 : r0 + h, c0 : c0 + w] = True
    return rle.encode(m)


A, B, C, D = _rle(0, 0), _rle(4, 4), _rle(0, 4), _rle(4, 0)  # the four disjoint quadrants


class Truth:
    """The GroundTruth protocol: instances(media_id, noun_phrase) -> RLE counts."""

    def __init__(self, table: dict[tuple[str, str], list[str]]):
        self.table = table

    def instances(self, media_id: str, noun_phrase: str) -> list[str]:
        return self.table.get((media_id, noun_phrase), [])


def _annotations(pairs: list[tuple[str, str, list[str]]]) -> pa.Table:
    rows = [
        {"pair_id": f"{m}/{np_}", "media_id": m, "uri": "u", "width": S, "height": S, "noun_phrase": np_,
         "masks": [{"instance_id": f"{m}/{np_}:{k}", "rle": c, "box_xyxy": [0, 0, 1, 1], "score": 1.0}
                   for k, c in enumerate(masks)],
         "is_exhaustive": True, "is_negative": not masks, "provenance": "auto", "round": 1}
        for m, np_, masks in pairs
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, ANNOTATIONS)


def test_hand_counted_case():
    truth = Truth(
        {("m1", "circle"): [A, B], ("m1", "square"): [C, D], ("m2", "circle"): [A], ("m3", "star"): [B]}
    )
    ann = _annotations(
        [
            ("m1", "circle", [B, A]),  # exactly right (order does not matter): 2 hits
            ("m1", "square", [C]),  # D missed: 1 hit
            ("m2", "star", []),  # a negative, and truly absent
            ("m2", "circle", []),  # a negative, but A is there
            ("m3", "star", [B, B]),  # a duplicate: one-to-one matching counts one hit
        ]
    )
    # tp = 2+1+0+0+1 = 4; predicted = 2+1+0+0+2 = 5; truth = 2+2+0+1+1 = 6; exact pairs: the first and third.
    assert committed_quality(ann, truth) == {
        "precision": 0.8, "recall": 0.6667, "pair_precision": 0.4, "negative_precision": 0.5
    }  # fmt: skip


@pytest.mark.parametrize(("h", "hit"), [(4, True), (2, True), (1, False)])
def test_a_mask_counts_from_iou_one_half(h, hit):
    """Truth is a 4x4 square; a 4-wide mask of height h inside it has IoU h/4."""
    q = committed_quality(_annotations([("m", "x", [_rle(0, 0, h=h)])]), Truth({("m", "x"): [A]}))
    assert (q["precision"], q["recall"], q["pair_precision"]) == ((1.0, 1.0, 1.0) if hit else (0.0, 0.0, 0.0))
    assert q["negative_precision"] == 1.0  # no negatives committed
