"""COCO compressed RLE helpers. Every mask the engine stores or sends goes through these."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode(mask: np.ndarray) -> str:
    """Bool/0-1 array (H, W) -> COCO compressed RLE counts string."""
    m = np.asfortranarray(mask.astype(np.uint8))
    return mask_utils.encode(m)["counts"].decode("ascii")


def decode(counts: str, height: int, width: int) -> np.ndarray:
    """COCO compressed RLE counts -> bool array (H, W). Raises ValueError on a malformed RLE."""
    rle = to_coco(counts, height, width)
    try:
        m = mask_utils.decode(rle)
    except Exception as exc:  # pycocotools raises bare errors on garbage
        raise ValueError(f"RLE does not decode at size {height}x{width}: {exc}") from exc
    if m.shape != (height, width):
        raise ValueError(f"RLE decodes to {m.shape}, expected {(height, width)}")
    return m.astype(bool)


def to_coco(counts: str, height: int, width: int) -> dict:
    return {"size": [int(height), int(width)], "counts": counts.encode("ascii")}


def area(counts: str, height: int, width: int) -> int:
    return int(mask_utils.area(to_coco(counts, height, width)))


def box_xyxy(counts: str, height: int, width: int) -> list[float]:
    x, y, w, h = mask_utils.toBbox(to_coco(counts, height, width)).tolist()
    return [x, y, x + w, y + h]


def iou_matrix(a: list[str], b: list[str], height: int, width: int) -> np.ndarray:
    """Mask IoU between two lists of RLEs of one image: shape (len(a), len(b))."""
    if not a or not b:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    ra = [to_coco(c, height, width) for c in a]
    rb = [to_coco(c, height, width) for c in b]
    return np.asarray(mask_utils.iou(ra, rb, [0] * len(rb)), dtype=np.float64).reshape(len(a), len(b))
