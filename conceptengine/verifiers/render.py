"""The pictures the AI verifiers look at, as the SAM 3 paper feeds them.

MV sees two views of one mask: a zoomed-out crop with the object's box drawn (is this the right kind
of thing, in context?) and a zoomed-in crop with the mask tinted over it (is the mask tight and
whole?). EV sees the whole image with every proposed box drawn, or the plain image when there are
none. All views have one fixed square size so that a batch stacks into one tensor without resizing
surprises in the processor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from conceptengine.engine import rle as rle_utils

BOX_COLOR = (255, 0, 255)  # magenta: rare in natural and rendered images, easy to test for
MASK_COLOR = (0, 160, 255)
MASK_ALPHA = 0.5
PAD_COLOR = (0, 0, 0)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"verifier views need an RGB uint8 array of shape (H, W, 3), got {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"verifier views need a uint8 image, got dtype {image.dtype}")
    return image


def _check_box(box_xyxy: Sequence[float]) -> tuple[float, float, float, float]:
    if box_xyxy is None or len(box_xyxy) != 4:
        raise ValueError(f"box_xyxy must have 4 numbers (x0, y0, x1, y1), got {box_xyxy!r}")
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    if not np.all(np.isfinite([x0, y0, x1, y1])) or x1 < x0 or y1 < y0:
        raise ValueError(f"box_xyxy must be finite with x0 <= x1 and y0 <= y1, got {list(box_xyxy)}")
    return x0, y0, x1, y1


def _square_around(box: tuple[float, float, float, float], scale: float, min_side: float) -> tuple[int, ...]:
    """A square crop window centred on the box, `scale` times its longer side (never under min_side)."""
    x0, y0, x1, y1 = box
    side = max(max(x1 - x0, y1 - y0) * scale, min_side)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    s = max(round(side), 1)
    return left, top, left + s, top + s


def _crop_resize(pil: Image.Image, window: tuple[int, ...], size: int) -> Image.Image:
    # PIL pads out-of-image parts of the window with zeros (PAD_COLOR), so boxes near edges stay centred.
    return pil.crop(window).resize((size, size), Image.BILINEAR)


def _to_window(box: tuple[float, float, float, float], window: tuple[int, ...], size: int) -> list[float]:
    left, top, right, _ = window
    k = size / (right - left)
    x0, y0, x1, y1 = box
    return [(x0 - left) * k, (y0 - top) * k, (x1 - left) * k, (y1 - top) * k]


def _draw_box(pil: Image.Image, box: Sequence[float], width: int) -> None:
    size = pil.size[0]
    x0, y0, x1, y1 = (min(max(v, 0.0), size - 1.0) for v in box)
    ImageDraw.Draw(pil).rectangle([x0, y0, max(x1, x0), max(y1, y0)], outline=BOX_COLOR, width=width)


def overlay_mask(image: np.ndarray, mask: np.ndarray, alpha: float = MASK_ALPHA) -> np.ndarray:
    """Tint the mask's pixels; semi-transparent so the verifier still sees what is under it."""
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(MASK_COLOR, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mv_views(
    image: np.ndarray,
    rle: str,
    box_xyxy: Sequence[float],
    size: int = 112,
    context: float = 3.0,
    zoom: float = 1.25,
    line_width: int = 2,
) -> tuple[Image.Image, Image.Image]:
    """(zoomed-out crop with the box drawn, zoomed-in crop with the mask overlaid), both size x size.

    `context` and `zoom` are crop sides as multiples of the box's longer side; crops never shrink below
    a quarter of the image (context view) or 16 px (zoomed view), so tiny boxes still show surroundings.
    """
    image = _check_image(image)
    if size < 8:
        raise ValueError(f"view size must be at least 8 px, got {size}")
    h, w = image.shape[:2]
    box = _check_box(box_xyxy)
    if not isinstance(rle, str):  # ValueError: the stage turns it into the row's error, like any bad input
        got = type(rle).__name__
        raise ValueError(f"a mask's rle must be a COCO RLE counts string, got {got}")  # noqa: TRY004
    mask = rle_utils.decode(rle, h, w)

    out_window = _square_around(box, context, min_side=max(h, w) / 4)
    zoomed_out = _crop_resize(Image.fromarray(image), out_window, size)
    _draw_box(zoomed_out, _to_window(box, out_window, size), line_width)

    in_window = _square_around(box, zoom, min_side=16)
    zoomed_in = _crop_resize(Image.fromarray(overlay_mask(image, mask)), in_window, size)
    return zoomed_out, zoomed_in


def letterbox(image: np.ndarray, size: int) -> tuple[Image.Image, float, int, int]:
    """Fit the whole image into a size x size square, keeping its aspect: (view, scale, dx, dy)."""
    h, w = image.shape[:2]
    k = size / max(h, w)
    nw, nh = max(round(w * k), 1), max(round(h * k), 1)
    canvas = Image.new("RGB", (size, size), PAD_COLOR)
    dx, dy = (size - nw) // 2, (size - nh) // 2
    canvas.paste(Image.fromarray(image).resize((nw, nh), Image.BILINEAR), (dx, dy))
    return canvas, k, dx, dy


def ev_view(
    image: np.ndarray, boxes: Sequence[Sequence[float]], size: int = 112, line_width: int = 2
) -> Image.Image:
    """The whole image with every proposed box drawn; with no boxes, the plain (letterboxed) image."""
    image = _check_image(image)
    if size < 8:
        raise ValueError(f"view size must be at least 8 px, got {size}")
    view, k, dx, dy = letterbox(image, size)
    for b in boxes:
        x0, y0, x1, y1 = _check_box(b)
        _draw_box(view, [x0 * k + dx, y0 * k + dy, x1 * k + dx, y1 * k + dy], line_width)
    return view
