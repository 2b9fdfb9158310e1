from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conceptengine.engine import rle
from conceptengine.verifiers import render

GRAY = 100


def _scene(h: int = 200, w: int = 300) -> tuple[np.ndarray, str, list[float]]:
    image = np.full((h, w, 3), GRAY, dtype=np.uint8)
    mask = np.zeros((h, w), dtype=bool)
    mask[80:120, 130:170] = True  # a 40x40 object centred at (150, 100)
    return image, rle.encode(mask), [130.0, 80.0, 170.0, 120.0]


def _is(px: np.ndarray, color: tuple[int, int, int], tol: int = 8) -> np.ndarray:
    return np.all(np.abs(px.astype(int) - np.asarray(color)) <= tol, axis=-1)


def test_mv_views_have_the_fixed_size() -> None:
    image, counts, box = _scene()
    for size in (112, 64):
        out, zoom = render.mv_views(image, counts, box, size=size)
        assert out.size == (size, size) and zoom.size == (size, size)
        assert out.mode == zoom.mode == "RGB"


def test_zoomed_out_view_draws_the_box_where_it_is() -> None:
    image, counts, box = _scene()
    out, _ = render.mv_views(image, counts, box, size=120, context=3.0)
    px = np.asarray(out)
    # window side = 3 * 40 = 120 px centred on the box, so the box spans [40, 80) in view pixels
    assert _is(px[40, 60], render.BOX_COLOR).all()  # top edge, middle
    assert _is(px[60, 40], render.BOX_COLOR).all()  # left edge, middle
    assert _is(px[60, 60], (GRAY, GRAY, GRAY)).all()  # inside the box: untouched image
    assert _is(px[5, 5], (GRAY, GRAY, GRAY)).all()  # context around it: untouched image
    assert _is(px, render.BOX_COLOR).sum() > 4 * 30  # a whole rectangle, not a stray pixel


def test_zoomed_in_view_tints_the_mask_only() -> None:
    image, counts, box = _scene()
    _, zoom = render.mv_views(image, counts, box, size=100, zoom=1.25)
    px = np.asarray(zoom)
    tinted = tuple(round(0.5 * GRAY + 0.5 * c) for c in render.MASK_COLOR)
    assert _is(px[50, 50], tinted, tol=2).all()  # centre: on the mask
    assert _is(px[2, 2], (GRAY, GRAY, GRAY), tol=2).all()  # corner: 1.25x box, outside the mask
    assert not _is(px, render.BOX_COLOR).any()  # the close-up carries the mask, not the box


def test_box_at_the_image_edge_pads_instead_of_shifting() -> None:
    image = np.full((100, 100, 3), GRAY, dtype=np.uint8)
    mask = np.zeros((100, 100), dtype=bool)
    mask[0:20, 0:20] = True
    out, zoom = render.mv_views(image, rle.encode(mask), [0, 0, 20, 20], size=60, context=3.0)
    px = np.asarray(out)
    assert out.size == (60, 60)
    assert (px[:5, :5] == 0).all()  # the window's out-of-image part is padding
    # window [-20, 40) on both axes at scale 1: the box stays centred at view pixels [20, 40]
    assert _is(px[20, 30], render.BOX_COLOR).all() and _is(px[30, 20], render.BOX_COLOR).all()
    assert _is(px[30, 30], (GRAY, GRAY, GRAY)).all()
    assert zoom.size == (60, 60)


def test_ev_view_without_boxes_is_the_plain_image() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, (64, 64, 3), dtype=np.uint8)
    view = render.ev_view(image, [], size=64)
    assert view.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(view), image)  # same size: no resampling, no drawing
    smaller = np.asarray(render.ev_view(image, [], size=32))
    expected = np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(smaller, expected)


def test_ev_view_draws_every_box_and_keeps_aspect() -> None:
    image = np.full((100, 200, 3), GRAY, dtype=np.uint8)  # wide: letterboxed with bands above/below
    boxes = [[10, 10, 50, 50], [120, 40, 180, 90]]
    view = np.asarray(render.ev_view(image, boxes, size=100))
    assert view.shape == (100, 100, 3)
    assert (view[:20] == 0).all() and (view[-20:] == 0).all()  # 200x100 -> 100x50 centred: 25 px bands
    # box 1 top edge at y = 25 + 10/2 = 30, x in [5, 25]; box 2 left edge at x = 60, y in [45, 70]
    assert _is(view[30, 15], render.BOX_COLOR).all()
    assert _is(view[55, 60], render.BOX_COLOR).all()
    assert _is(view[50, 40], (GRAY, GRAY, GRAY)).all()  # between boxes: untouched


def test_bad_inputs_name_what_to_fix() -> None:
    image, counts, _ = _scene()
    with pytest.raises(ValueError, match="box_xyxy"):
        render.mv_views(image, counts, [10, 10, 5])
    with pytest.raises(ValueError, match="box_xyxy"):
        render.ev_view(image, [[50, 50, 10, 10]])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        render.ev_view(image[..., 0], [])
    with pytest.raises(ValueError, match="RLE"):  # a mask of another image size
        render.mv_views(image[:100], counts, [130, 80, 170, 120])
