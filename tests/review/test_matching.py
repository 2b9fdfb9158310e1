"""One-to-one IoU matching: duplicates and poor overlaps stay unmatched."""

from __future__ import annotations

import numpy as np

from conceptengine.engine import rle
from conceptengine.review.matching import match
from tests.review.helpers import H, W, square


def test_one_to_one_at_threshold() -> None:
    a, b = square(0, 0), square(8, 8)
    assert sorted(match([b, a], [a, b], H, W)) == [(0, 1), (1, 0)]
    assert match([a, a], [a], H, W) in ([(0, 0)], [(1, 0)])  # a duplicate matches nothing
    assert match([square(2, 0)], [a], H, W) == []  # IoU 8/24 < 0.5
    assert match([square(1, 0)], [a], H, W) == [(0, 0)]  # IoU 12/20 >= 0.5
    assert match([], [a], H, W) == [] and match([a], [], H, W) == []


def _cols(c0: int, c1: int) -> str:
    m = np.zeros((H, W), dtype=bool)
    m[0:2, c0 : c1 + 1] = True
    return rle.encode(m)


def test_prefers_more_matches_over_the_single_best_overlap() -> None:
    t0, t1 = _cols(0, 9), _cols(3, 12)
    g0, g1 = _cols(1, 10), _cols(0, 6)  # g0 fits t0 best (0.82) but also t1 (0.67); g1 fits only t0 (0.7)
    assert sorted(match([g0, g1], [t0, t1], H, W)) == [(0, 1), (1, 0)]
