"""INGEST: turn a list of media URIs into the media table, quarantining files that do not decode.

Runs on CPU before any model stage: a corrupt or truncated image is caught here, gets an `error`,
and is reported instead of crashing a GPU actor later.
"""

from __future__ import annotations

import io

import fsspec
import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from conceptengine.engine.ids import media_id_for_bytes
from conceptengine.engine.stage import Stage, register
from conceptengine.engine.tables import MEDIA


def probe_image(data: bytes) -> tuple[int, int]:
    """(width, height) of an image that fully decodes; raises ValueError naming why not."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # verify() misses truncated pixel data; a full load does not
            return im.size
    except UnidentifiedImageError:
        # PIL's own message embeds an object address; keep errors stable across runs and machines.
        raise ValueError("not a decodable image: unknown or corrupt image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"not a decodable image: {exc}") from exc


@register
class IngestStage(Stage):
    name = "ingest"
    input_columns = ("uri", "split", "domain")
    output_columns = tuple(MEDIA.names)

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_input(batch)
        rows = []
        for uri, split, domain in zip(*(batch[c].to_pylist() for c in self.input_columns), strict=True):
            width = height = 0
            error = None
            try:
                with fsspec.open(uri, "rb") as f:
                    data = f.read()
            except OSError as exc:
                data, error = uri.encode(), f"cannot read {uri}: {exc}"
            if error is None:
                try:
                    width, height = probe_image(data)
                except ValueError as exc:
                    error = f"{uri}: {exc}"
            rows.append(
                dict(
                    media_id=media_id_for_bytes(data),
                    uri=uri,
                    width=width,
                    height=height,
                    domain=domain,
                    split=split,
                    error=error,
                )
            )
        return pa.Table.from_pylist(rows, schema=MEDIA)
