"""Read media as RGB arrays from any fsspec URL; undecodable bytes become one typed, reportable error."""

from __future__ import annotations

import io

import fsspec
import numpy as np
from PIL import Image, UnidentifiedImageError


class CorruptMediaError(ValueError):
    """The bytes at `uri` are not a decodable image. Stages turn this into a row's `error`, never a crash."""

    def __init__(self, uri: str, reason: str):
        self.uri = uri
        self.reason = reason
        super().__init__(f"corrupt media {uri}: {reason}")


def load_rgb(uri: str) -> np.ndarray:
    """(H, W, 3) uint8. Raises FileNotFoundError for a missing file, CorruptMediaError for bad bytes."""
    with fsspec.open(uri, "rb") as f:
        data = f.read()
    if not data:
        raise CorruptMediaError(uri, "file is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # force a full decode: truncated files only fail here
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError as exc:
        # PIL's message embeds a buffer address; keep the reason stable so reruns give identical rows.
        raise CorruptMediaError(uri, "not a recognised image format") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptMediaError(uri, f"{type(exc).__name__}: {exc}") from exc
