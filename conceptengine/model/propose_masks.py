"""Stage `propose_masks`: SAM 3 instance masks for every image-NP pair of a batch.

Rows are grouped by media so each image is encoded by the backbone once, whatever the number of its NPs,
and all of its NPs go through the detector together. When `decode_images` ran ahead of this stage the rows
carry the resized uint8 image (`pixels`), and this actor only normalizes and computes; without that column
it reads and resizes the image itself, with the same arithmetic, so both paths give identical rows.
A media that cannot be read or whose detection fails marks its rows' `error` and the batch goes on; the
runner reports and quarantines those rows. An `error` set upstream is passed through unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

import pyarrow as pa
import torch

from conceptengine.engine.ids import instance_id
from conceptengine.engine.media import CorruptMediaError
from conceptengine.engine.stage import Stage, StageConfig, parse_params, register
from conceptengine.engine.tables import PAIRS, PROPOSALS
from conceptengine.model.preprocess import PIXELS, PIXELS_SHAPE, decode_for_model, pixels_tensor, read_error
from conceptengine.model.proposal_settings import ProposeMasksParams
from conceptengine.model.sam3_backend import Sam3Detector


@register
class ProposeMasks(Stage):
    """Params: ProposeMasksParams."""

    name: ClassVar[str] = "propose_masks"
    input_columns: ClassVar[tuple[str, ...]] = tuple(PAIRS.names)
    output_columns: ClassVar[tuple[str, ...]] = tuple(PROPOSALS.names)

    def __init__(self, cfg: StageConfig, **params: Any):
        super().__init__(cfg, **params)
        self.p = parse_params(self.name, ProposeMasksParams, params)
        self.detector = None

    def setup(self) -> None:

        self.detector = Sam3Detector.from_pretrained(
            self.p.model_path,
            device=self.p.device,
            dtype=self.p.dtype,
            np_batch_size=self.p.np_batch_size,
            text_cache_size=self.p.text_cache_size,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_input(batch)
        if self.detector is None:
            self.setup()
        rows = batch.select(list(PAIRS.names)).to_pylist()
        decoded = PIXELS in batch.column_names
        pixels = batch.column(PIXELS) if decoded else None
        shapes = batch.column(PIXELS_SHAPE).to_pylist() if decoded else [None] * len(rows)
        upstream = batch.column("error").to_pylist() if "error" in batch.column_names else [None] * len(rows)
        by_media: dict[tuple, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            by_media[(row["media_id"], row["uri"], row["width"], row["height"])].append(i)
        out: list[dict | None] = [None] * len(rows)
        for idx in by_media.values():
            results = self._media(rows, idx, pixels, shapes, upstream)
            for i, result in zip(idx, results):
                out[i] = result
        return pa.Table.from_pylist(out, schema=PROPOSALS)

    def _media(
        self,
        rows: list[dict],
        idx: list[int],
        pixels: pa.ChunkedArray | None,
        shapes: list,
        upstream: list[str | None],
    ) -> list[dict]:
        version = self.detector.version
        first = rows[idx[0]]
        uri, height, width = first["uri"], first["height"], first["width"]

        def failed(msg: str) -> list[dict]:
            return [
                rows[i]
                | {"presence": None, "masks": [], "model_version": version, "error": upstream[i] or msg}
                for i in idx
            ]

        if any(upstream[i] for i in idx):
            return failed(next(upstream[i] for i in idx if upstream[i]))
        # Pixels from decode_images when any row of this media has them; otherwise decode here.
        have = next((i for i in idx if shapes[i] is not None), None)
        try:
            if have is not None:
                resized = pixels_tensor(pixels[have].as_py(), shapes[have])
            else:
                image = decode_for_model(self.detector.pixel_spec, uri, width, height)
                resized = torch.from_numpy(image)[None]
        except (CorruptMediaError, OSError, ValueError) as exc:
            return failed(read_error(uri, exc))
        try:
            dets = self.detector.detect_resized(
                resized,
                height,
                width,
                [rows[i]["noun_phrase"] for i in idx],
                self.p.score_threshold,
                max_instances=self.p.max_masks,
            )
        except Exception as exc:  # noqa: BLE001 - a model failure on one image must not end the run; the row says why
            return failed(f"detector failed on {uri}: {type(exc).__name__}: {exc}")
        results = []
        for i, det in zip(idx, dets):
            row = rows[i]
            masks = [
                {
                    "instance_id": instance_id(row["pair_id"], k),
                    "rle": det.masks[k],
                    "box_xyxy": det.boxes_xyxy[k],
                    "score": det.scores[k],
                }
                for k in range(len(det.masks))
            ]
            results.append(
                row | {"presence": det.presence, "masks": masks, "model_version": version, "error": None}
            )
        return results
