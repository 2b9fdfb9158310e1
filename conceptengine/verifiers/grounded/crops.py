"""What the grounded MV scorer sees: the paper's two views of one mask, each its RGB and the mask as a
fourth channel.

- zoomed in: a square crop centred on the mask's box and `CROP_SCALE` times its longer side, so the object
  fills it whatever its size in the image (shape is then learnable at a few dozen pixels);
- zoomed out: the same centre, `CONTEXT_SCALE` times wider, so a mask that covers only part of an object,
  or spills onto its neighbours, shows as such.

Both are resized to the same side and stacked: (8, size, size), channels RGB + mask of the zoomed-in view,
then RGB + mask of the zoomed-out one. Out-of-image parts are black.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

CROP_SIZE = 48
CROP_SCALE = 1.3
CONTEXT_SCALE = 3.0
VIEW_SCALES = (CROP_SCALE, CONTEXT_SCALE)
VIEW_CHANNELS = 4  # RGB + mask per view
CHANNELS = VIEW_CHANNELS * len(VIEW_SCALES)  # what object_views stacks
MIN_SIDE = 12.0  # px: a speck's crop still shows some surroundings


def crop_window(box_xyxy: Sequence[float], scale: float = CROP_SCALE) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    side = max(max(x1 - x0, y1 - y0) * scale, MIN_SIDE)
    left, top = round((x0 + x1) / 2 - side / 2), round((y0 + y1) / 2 - side / 2)
    s = max(round(side), 1)
    return left, top, left + s, top + s


def object_crop(
    image: np.ndarray,
    mask: np.ndarray,
    box_xyxy: Sequence[float],
    size: int = CROP_SIZE,
    scale: float = CROP_SCALE,
) -> np.ndarray:
    """(4, size, size) float32 in [0, 1]: RGB of the crop around `box_xyxy`, `scale` times its side, then
    the mask."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"object_crop needs an RGB uint8 image (H, W, 3), got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"object_crop: mask is {mask.shape}, the image is {image.shape[:2]}")
    window = crop_window(box_xyxy, scale)
    rgb = Image.fromarray(image).crop(window).resize((size, size), Image.BILINEAR)
    m = Image.fromarray(mask.astype(np.uint8) * 255).crop(window).resize((size, size), Image.BILINEAR)
    out = np.empty((VIEW_CHANNELS, size, size), dtype=np.float32)
    out[:3] = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0
    out[3] = np.asarray(m, dtype=np.float32) / 255.0
    return out


def object_views(
    image: np.ndarray, mask: np.ndarray, box_xyxy: Sequence[float], size: int = CROP_SIZE
) -> np.ndarray:
    """(CHANNELS, size, size): the zoomed-in view's 4 channels, then the zoomed-out view's."""
    return np.concatenate([object_crop(image, mask, box_xyxy, size, s) for s in VIEW_SCALES])


def rgb_channels(n_channels: int) -> list[int]:
    """The colour channels of stacked views (every channel but each view's mask)."""
    return [c for c in range(n_channels) if c % VIEW_CHANNELS != VIEW_CHANNELS - 1]
