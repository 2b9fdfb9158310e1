"""Stage `propose_masks`: SAM 3 instance masks for every image-NP pair of a batch.

Rows are grouped by media so each image is read, decoded and encoded by the backbone once, whatever the
number of its NPs. A media that cannot be read or whose detection fails marks its rows' `error` and the
batch goes on; the runner reports and quarantines those rows.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

import pyarrow as pa

from conceptengine.engine.ids import instance_id
from conceptengine.engine.stage import Stage, StageConfig, register
from conceptengine.engine.tables import PAIRS, PROPOSALS
from conceptengine.engine.media import CorruptMediaError, load_rgb


@register
class ProposeMasks(Stage):
    """Params: model_path (required), score_threshold (0.5), device ("cpu"), max_masks (100), dtype (None)."""

    name: ClassVar[str] = "propose_masks"
    input_columns: ClassVar[tuple[str, ...]] = tuple(PAIRS.names)
    output_columns: ClassVar[tuple[str, ...]] = tuple(PROPOSALS.names)

    def __init__(
        self,
        cfg: StageConfig,
        model_path: str | None = None,
        score_threshold: float = 0.5,
        device: str = "cpu",
        max_masks: int = 100,
        dtype: str | None = None,
        **params: Any,
    ):
        super().__init__(cfg, **params)
        if params:
            raise ValueError(f"propose_masks: unknown params {sorted(params)}")
        if not model_path:
            raise ValueError(
                "propose_masks: model_path is required (the SAM 3 checkpoint directory, sam3.model)"
            )
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise ValueError(f"propose_masks: score_threshold must be in [0, 1]; got {score_threshold}")
        if int(max_masks) < 1:
            raise ValueError(f"propose_masks: max_masks must be >= 1; got {max_masks}")
        self.model_path = model_path
        self.score_threshold = float(score_threshold)
        self.device = device
        self.max_masks = int(max_masks)
        self.dtype = dtype
        self.detector = None

    def setup(self) -> None:
        from conceptengine.model.sam3_backend import Sam3Detector

        self.detector = Sam3Detector.from_pretrained(self.model_path, device=self.device, dtype=self.dtype)

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_input(batch)
        if self.detector is None:
            self.setup()
        rows = batch.select(list(PAIRS.names)).to_pylist()
        by_media: dict[str, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            by_media[row["media_id"]].append(i)
        out: list[dict | None] = [None] * len(rows)
        for idx in by_media.values():
            for i, result in zip(idx, self._media(rows[idx[0]]["uri"], [rows[i] for i in idx])):
                out[i] = result
        return pa.Table.from_pylist(out, schema=PROPOSALS)

    def _media(self, uri: str, rows: list[dict]) -> list[dict]:
        version = self.detector.version

        def failed(msg: str) -> list[dict]:
            return [
                row | {"presence": None, "masks": [], "model_version": version, "error": msg} for row in rows
            ]

        try:
            image = load_rgb(uri)
        except (CorruptMediaError, OSError) as exc:
            return failed(str(exc) if isinstance(exc, CorruptMediaError) else f"cannot read {uri}: {exc}")
        h, w = image.shape[:2]
        bad = [r for r in rows if (r["height"], r["width"]) != (h, w)]
        if bad:
            return failed(f"{uri} is {w}x{h} but its pairs say {bad[0]['width']}x{bad[0]['height']}")
        try:
            dets = self.detector.detect(image, [r["noun_phrase"] for r in rows], self.score_threshold)
        except Exception as exc:  # noqa: BLE001 - a model failure on one image must not end the run; the row says why
            return failed(f"detector failed on {uri}: {type(exc).__name__}: {exc}")
        results = []
        for row, det in zip(rows, dets):
            n = min(len(det.masks), self.max_masks)
            masks = [
                {
                    "instance_id": instance_id(row["pair_id"], k),
                    "rle": det.masks[k],
                    "box_xyxy": det.boxes_xyxy[k],
                    "score": det.scores[k],
                }
                for k in range(n)
            ]
            results.append(
                row | {"presence": det.presence, "masks": masks, "model_version": version, "error": None}
            )
        return results
