"""One-to-one matching of masks to ground-truth instances at an IoU threshold.

One-to-one (not "any overlap") because a duplicate mask of an instance that is already covered is a
mistake a careful reviewer catches: EV rejects it and correction removes it.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from conceptengine.engine import rle


def match(
    given: list[str], truth: list[str], height: int, width: int, thr: float = 0.5
) -> list[tuple[int, int]]:
    """Pairs (given index, truth index) with IoU >= thr, as many as possible, best IoU among ties."""
    if not given or not truth:
        return []
    iou = rle.iou_matrix(given, truth, height, width)
    ok = iou >= thr
    # Maximise the number of valid pairs first (the 1), then their total IoU.
    rows, cols = linear_sum_assignment(-np.where(ok, 1.0 + iou, 0.0))
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if ok[r, c]]
