"""Reading a pair's image for the verifiers: any fsspec URI, RGB uint8, checked against the row's size.

The size check matters because masks are RLEs sized by the row's (height, width): an image that
changed under the same URI would silently misalign every mask, so it is a row error instead.
"""

from __future__ import annotations

import io

import fsspec
import numpy as np
from PIL import Image, UnidentifiedImageError


def load_rgb(uri: str, width: int | None = None, height: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8; raises ValueError naming the URI and the reason when it cannot be used."""
    try:
        with fsspec.open(uri, "rb") as f:
            data = f.read()
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read image {uri}: {exc}") from exc
    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"image {uri} does not decode: {exc}") from exc
    if width is not None and height is not None:
        check_size(arr, uri, width, height)
    return arr


def check_size(image: np.ndarray, uri: str, width: int, height: int) -> None:
    if image.shape[:2] != (height, width):
        raise ValueError(
            f"image {uri} is {image.shape[1]}x{image.shape[0]} but its row says {width}x{height}"
        )
