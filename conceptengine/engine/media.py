"""Reading media: any fsspec URL to an RGB array, with one typed error for bytes that do not decode.

Every stage that touches pixels (ingest, SAM 3, the verifiers) reads through here, so a corrupt file
gets the same stable message everywhere and becomes a row's `error`, never a crash.
"""

from __future__ import annotations

import io

import fsspec
import numpy as np
from PIL import Image, UnidentifiedImageError


class CorruptMediaError(ValueError):
    """The bytes at `uri` are not a decodable image."""

    def __init__(self, uri: str, reason: str):
        self.uri = uri
        self.reason = reason
        super().__init__(f"corrupt media {uri}: {reason}")


def read_bytes(uri: str) -> bytes:
    """Raises FileNotFoundError for a missing file (fsspec's own error), OSError for other I/O failures."""
    with fsspec.open(uri, "rb") as f:
        return f.read()


def decode_rgb(data: bytes, uri: str) -> np.ndarray:
    """(H, W, 3) uint8 from encoded bytes; a full decode, because truncated files only fail on load()."""
    if not data:
        raise CorruptMediaError(uri, "file is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError as exc:
        # PIL's message embeds a buffer address; keep the reason stable so reruns give identical rows.
        raise CorruptMediaError(uri, "not a recognised image format") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptMediaError(uri, f"{type(exc).__name__}: {exc}") from exc


def load_rgb(uri: str, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Read and decode; with width/height, also check the image still has the size its row records."""
    image = decode_rgb(read_bytes(uri), uri)
    if width is not None and height is not None:
        check_size(image, uri, width, height)
    return image


def check_size(image: np.ndarray, uri: str, width: int, height: int) -> None:
    """Masks are RLEs sized by the row: an image that changed under the same URI would misalign them."""
    if image.shape[:2] != (height, width):
        raise ValueError(
            f"image {uri} is {image.shape[1]}x{image.shape[0]} but its row says {width}x{height}"
        )
