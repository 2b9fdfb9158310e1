from __future__ import annotations

import numpy as np
import pytest

from conceptengine.engine import rle
from conceptengine.verifiers import choices
from conceptengine.verifiers.verify import ExhaustivityVerifier, MaskVerifier


def _image_and_masks() -> tuple[np.ndarray, list[dict]]:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    masks = []
    for x0, y0 in ((10, 10), (60, 40), (100, 70)):
        m = np.zeros((90, 120), dtype=bool)
        m[y0 : y0 + 15, x0 : x0 + 15] = True
        counts = rle.encode(m)
        masks.append({"rle": counts, "box_xyxy": rle.box_xyxy(counts, 90, 120)})
    return image, masks


def test_mask_verifier_scores_each_mask_in_order(backend) -> None:
    image, masks = _image_and_masks()
    mv = MaskVerifier(backend)
    probs = mv.score(image, "red square", masks)
    assert probs.shape == (3, len(choices.MV))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    # mask order is kept: scoring the last mask alone gives the last row
    np.testing.assert_allclose(mv.score(image, "red square", masks[2:]), probs[2:], atol=1e-5)
    assert mv.score(image, "red square", []).shape == (0, 5)
    # (rle, box) tuples are accepted as well as MASK-struct rows
    tuples = [(m["rle"], m["box_xyxy"]) for m in masks[:1]]
    np.testing.assert_allclose(mv.score(image, "red square", tuples), probs[:1], atol=1e-5)


def test_exhaustivity_verifier_and_presence(backend) -> None:
    image, masks = _image_and_masks()
    ev = ExhaustivityVerifier(backend)
    with_boxes = ev.score(image, "red square", [m["box_xyxy"] for m in masks])
    empty = ev.score(image, "red square", [])
    assert with_boxes.shape == empty.shape == (len(choices.EV),)
    assert abs(float(with_boxes.sum()) - 1) < 1e-6
    assert not np.allclose(with_boxes, empty)  # drawn boxes and prompt change what the model sees
    assert ev.presence(empty, 0) == pytest.approx(1.0 - float(empty[0]))
    assert ev.presence(with_boxes, 3) is None
