"""Stage `decode_images`: decode and resize images on CPU workers so SAM 3's GPU actors only compute.

Decoding a PNG/JPEG and the antialiased resize to the model's input size are CPU work that would otherwise
sit between GPU forwards in the `propose_masks` actor. This stage runs ahead of it (Ray chains the two
`map_batches`), reads each media of a batch once, and attaches the *resized uint8* image to every pair row
of that media. Float normalization is left to the GPU actor: it is one fused op there, and uint8 is a
quarter of float32 on the wire.

The pixels column is dictionary-encoded: a batch with 28 NPs of one image holds that image's bytes once,
while every row still carries (a reference to) them, so any later re-batching keeps rows self-sufficient.
A corrupt or missing image sets the row's `error` and leaves its pixels null; `propose_masks` passes that
error through unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch

from conceptengine.engine.media import CorruptMediaError, check_size, load_rgb
from conceptengine.engine.stage import Stage, StageConfig, register
from conceptengine.engine.tables import PAIRS
from conceptengine.model.processing import PixelSpec

PIXELS = "pixels"  # dictionary<int32, large_binary>: the resized image, uint8, CHW, C-contiguous
PIXELS_SHAPE = "pixels_shape"  # (3, H, W) of `pixels`

DECODED = pa.schema(
    list(PAIRS)
    + [
        (PIXELS, pa.dictionary(pa.int32(), pa.large_binary())),
        (PIXELS_SHAPE, pa.list_(pa.int32(), 3)),
        ("error", pa.string()),
    ]
)


def pixels_tensor(data: bytes, shape: list[int] | tuple[int, ...]) -> torch.Tensor:
    """Bytes of the `pixels` column -> (1, 3, h, w) uint8 tensor (a copy: arrow buffers are read-only)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"pixels hold {arr.size} bytes but pixels_shape says {list(shape)}")
    return torch.from_numpy(arr.reshape(tuple(shape)).copy())[None]


def read_error(uri: str, exc: Exception) -> str:
    """The row error for a media that cannot be used; stable text, so reruns give identical rows."""
    if isinstance(exc, CorruptMediaError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot read {uri}: {exc}"
    return str(exc)


def decode_for_model(spec: PixelSpec, uri: str, width: int, height: int) -> np.ndarray:
    """Read, decode, check the recorded size, resize. Raises CorruptMediaError, OSError or ValueError."""
    image = load_rgb(uri)
    try:
        check_size(image, uri, width, height)
    except ValueError:
        h, w = image.shape[:2]
        raise ValueError(f"{uri} is {w}x{h} but its pairs say {width}x{height}") from None
    return spec.resize(image)


@register
class DecodeImages(Stage):
    """Params: model_path (required: the SAM 3 checkpoint whose processor_config.json sets the size)."""

    name: ClassVar[str] = "decode_images"
    input_columns: ClassVar[tuple[str, ...]] = tuple(PAIRS.names)
    output_columns: ClassVar[tuple[str, ...]] = tuple(DECODED.names)

    def __init__(self, cfg: StageConfig, model_path: str | None = None, **params: Any):
        super().__init__(cfg, **params)
        if params:
            raise ValueError(f"decode_images: unknown params {sorted(params)}")
        if not model_path:
            raise ValueError(
                "decode_images: model_path is required (the SAM 3 checkpoint directory, sam3.model)"
            )
        self.model_path = model_path
        self.spec: PixelSpec | None = None

    def setup(self) -> None:
        self.spec = PixelSpec.from_checkpoint(self.model_path)

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_input(batch)
        if self.spec is None:
            self.setup()
        pairs = batch.select(list(PAIRS.names))
        rows = pairs.to_pylist()
        by_media: dict[str, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            # Keyed by uri and recorded size too: two rows that disagree on either must not share pixels.
            by_media[(row["media_id"], row["uri"], row["width"], row["height"])].append(i)
        dictionary: list[bytes] = []
        index: list[int | None] = [None] * len(rows)
        shapes: list[list[int] | None] = [None] * len(rows)
        errors: list[str | None] = [None] * len(rows)
        for (_, uri, width, height), idx in by_media.items():
            try:
                resized = decode_for_model(self.spec, uri, width, height)
            except (CorruptMediaError, OSError, ValueError) as exc:
                for i in idx:
                    errors[i] = read_error(uri, exc)
                continue
            dictionary.append(resized.tobytes())
            for i in idx:
                index[i], shapes[i] = len(dictionary) - 1, list(resized.shape)
        pixels = pa.DictionaryArray.from_arrays(
            pa.array(index, pa.int32()), pa.array(dictionary, pa.large_binary())
        )
        columns = [*pairs.columns, pixels, pa.array(shapes, DECODED.field(PIXELS_SHAPE).type), errors]
        return pa.Table.from_arrays(
            [c if isinstance(c, pa.Array | pa.ChunkedArray) else pa.array(c, pa.string()) for c in columns],
            schema=DECODED,
        )
