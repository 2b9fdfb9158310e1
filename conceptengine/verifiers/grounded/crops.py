"""What the grounded MV scorer sees: the object's square crop, resized, with its mask as a fourth channel.

The crop is centred on the mask's box and `scale` times its longer side, so the object fills it whatever
its size in the image (shape is then learnable at a few dozen pixels); out-of-image parts are black.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

CROP_SIZE = 48
CROP_SCALE = 1.3
MIN_SIDE = 12.0  # px: a speck's crop still shows some surroundings


def crop_window(box_xyxy: Sequence[float], scale: float = CROP_SCALE) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    side = max(max(x1 - x0, y1 - y0) * scale, MIN_SIDE)
    left, top = round((x0 + x1) / 2 - side / 2), round((y0 + y1) / 2 - side / 2)
    s = max(round(side), 1)
    return left, top, left + s, top + s


def object_crop(
    image: np.ndarray, mask: np.ndarray, box_xyxy: Sequence[float], size: int = CROP_SIZE
) -> np.ndarray:
    """(4, size, size) float32 in [0, 1]: RGB of the crop around `box_xyxy`, then the mask."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"object_crop needs an RGB uint8 image (H, W, 3), got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"object_crop: mask is {mask.shape}, the image is {image.shape[:2]}")
    window = crop_window(box_xyxy)
    rgb = Image.fromarray(image).crop(window).resize((size, size), Image.BILINEAR)
    m = Image.fromarray(mask.astype(np.uint8) * 255).crop(window).resize((size, size), Image.BILINEAR)
    out = np.empty((4, size, size), dtype=np.float32)
    out[:3] = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0
    out[3] = np.asarray(m, dtype=np.float32) / 255.0
    return out
