"""INGEST: turn a list of media URIs into the media table, quarantining files that do not decode.

Runs on CPU before any model stage: a corrupt or truncated image is caught here, gets an `error`,
and is reported instead of crashing a GPU actor later.
"""

from __future__ import annotations

import pyarrow as pa

from conceptengine.engine.ids import media_id_for_bytes
from conceptengine.engine.media import CorruptMediaError, decode_rgb, read_bytes
from conceptengine.engine.stage import Stage, register
from conceptengine.engine.tables import MEDIA


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
                data = read_bytes(uri)
            except OSError as exc:
                data, error = uri.encode(), f"cannot read {uri}: {type(exc).__name__}"
            if error is None:
                try:
                    height, width = decode_rgb(data, uri).shape[:2]
                except CorruptMediaError as exc:
                    error = str(exc)
            rows.append(
                {
                    "media_id": media_id_for_bytes(data),
                    "uri": uri,
                    "width": width,
                    "height": height,
                    "domain": domain,
                    "split": split,
                    "error": error,
                }
            )
        return pa.Table.from_pylist(rows, schema=MEDIA)
