"""Images as `data:` URLs, the way OpenAI-compatible chat APIs carry them inline.

PNG is lossless, so a server decodes exactly the pixels the in-process backend would have seen and
the two backends give the same probabilities for the same request.
"""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image

_PREFIX = "data:image/"


def encode_png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode(url: str) -> Image.Image:
    """An RGB image from a base64 `data:image/...` URL; anything else is a ValueError naming the problem."""
    if not url.startswith(_PREFIX):
        shown = url[:40] + ("..." if len(url) > 40 else "")
        raise ValueError(
            f"image_url must be a base64 data:image/... URL (this server fetches nothing), got {shown!r}"
        )
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise ValueError("image_url data URL must be base64-encoded: data:image/png;base64,<payload>")
    try:
        raw = base64.b64decode(payload, validate=True)
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (binascii.Error, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"image_url does not hold a decodable image: {type(exc).__name__}: {exc}") from None
    return image.convert("RGB")
