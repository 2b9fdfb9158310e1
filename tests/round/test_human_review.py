"""apply_correction: removal by instance id or index, added RLEs as new instances with fresh ids and boxes."""

from __future__ import annotations

import numpy as np
import pytest

from conceptengine.engine import rle
from conceptengine.round.review_phases import apply_correction

H, W = 8, 10  # not square: a swapped height / width shows in the boxes


def _rle(rows: slice, cols: slice) -> str:
    m = np.zeros((H, W), dtype=bool)
    m[rows, cols] = True
    return rle.encode(m)


def _mask(k: int) -> dict:
    return {"instance_id": f"p:{k:03d}", "rle": _rle(slice(k, k + 1), slice(0, 2)), "box_xyxy": [0, k, 2, k + 1],
            "score": 0.5}  # fmt: skip


# Three proposed masks; MV rejected p:001, so the correction sees [p:000, p:002].
ROW = {"pair_id": "p", "height": H, "width": W, "masks": [_mask(0), _mask(1), _mask(2)]}
SURVIVED = [_mask(0), _mask(2)]


def _ids(masks: list[dict]) -> list[str]:
    return [m["instance_id"] for m in masks]


def test_no_edit_keeps_the_masks():
    assert apply_correction(ROW, SURVIVED, {}) == SURVIVED


@pytest.mark.parametrize("remove", [["p:002"], [1]])
def test_remove_by_instance_id_or_by_index_into_the_masks_shown(remove):
    # Index 1 is the second mask the reviewer saw (p:002), not the second proposed one (p:001).
    assert _ids(apply_correction(ROW, SURVIVED, {"remove": remove})) == ["p:000"]


def test_removing_an_id_that_is_not_shown_removes_nothing():
    assert _ids(apply_correction(ROW, SURVIVED, {"remove": ["p:001", "q:000"]})) == ["p:000", "p:002"]


def test_added_rles_become_new_instances_after_every_proposed_index():
    a, b = _rle(slice(2, 5), slice(5, 9)), _rle(slice(0, 8), slice(9, 10))
    out = apply_correction(ROW, SURVIVED, {"remove": [0], "add": [a, b]})
    # Three proposed masks (one dropped by MV): new ids start at 003, so none collides with p:002.
    assert _ids(out) == ["p:002", "p:003", "p:004"]
    assert len(set(_ids(out)) | set(_ids(ROW["masks"]))) == 5
    added = out[1:]
    assert [m["rle"] for m in added] == [a, b]
    assert [m["box_xyxy"] for m in added] == [[5, 2, 9, 5], [9, 0, 10, 8]]
    assert [m["score"] for m in added] == [1.0, 1.0]
    assert rle.decode(added[0]["rle"], H, W).sum() == 12
    assert out[0] == SURVIVED[1]  # a kept mask is passed through untouched
