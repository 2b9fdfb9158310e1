"""SAM 3 as the engine's detector: one image, many noun phrases, instance masks as COCO RLE.

The expensive part of SAM 3 is the vision backbone, and every image is queried with many NPs (most of them
negatives), so the image is encoded once and its features are reused for all its NPs, which go through the
DETR encoder/decoder in batches. Text embeddings are cached per unique NP for the detector's lifetime.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Sam3Model
from transformers.modeling_outputs import BaseModelOutputWithPooling

from conceptengine.engine import rle
from conceptengine.engine.ids import normalize_np
from conceptengine.model.processing import Sam3Inputs, load_sam3_inputs

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Detection:
    """One image-NP pair's result. Instances are sorted by score, highest first."""

    presence: float
    masks: list[str] = field(default_factory=list)  # COCO compressed RLE counts at the original image size
    boxes_xyxy: list[list[float]] = field(default_factory=list)  # pixels
    scores: list[float] = field(default_factory=list)


@dataclass
class RawOutputs:
    """Detector outputs for a batch of NPs on one image, before thresholding (for tests and training)."""

    pred_logits: torch.Tensor  # (N, Q)
    presence_logits: torch.Tensor  # (N, 1)
    pred_boxes: torch.Tensor  # (N, Q, 4) normalized xyxy
    pred_masks: torch.Tensor  # (N, Q, h, w) logits


def checkpoint_version(path: str) -> str:
    """Directory name plus a digest of the config and the weights' names, sizes, heads and tails.

    Cheap even for the 3 GB facebook/sam3 checkpoint, yet changes whenever the weights are rewritten.
    """
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(root.glob("*.json")) + sorted(root.glob("*.safetensors")):
        data = f.read_bytes() if f.suffix == ".json" else None
        h.update(f.name.encode())
        if data is not None:
            h.update(data)
            continue
        size = f.stat().st_size
        h.update(str(size).encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            h.update(fh.read(1 << 20))
    return f"{root.name}@{h.hexdigest()[:12]}"


class Sam3Detector:
    def __init__(
        self, model: Sam3Model, inputs: Sam3Inputs, version: str, device: str = "cpu", np_batch_size: int = 16
    ):
        self.model = model.eval()
        self.inputs = inputs
        self.version = version
        self.device = torch.device(device)
        self.dtype = next(model.parameters()).dtype
        self.np_batch_size = np_batch_size
        self._text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_pretrained(
        cls, path: str, device: str = "cpu", dtype: str | None = None, np_batch_size: int = 16
    ) -> Sam3Detector:
        if not Path(path, "config.json").exists():
            raise FileNotFoundError(f"no SAM 3 checkpoint at {path} (config.json missing); check sam3.model")
        if dtype is not None and dtype not in _DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)}")
        if np_batch_size < 1:
            raise ValueError(f"np_batch_size must be >= 1; got {np_batch_size}")
        model = Sam3Model.from_pretrained(path)
        model = model.to(device=device, dtype=_DTYPES[dtype] if dtype else None)
        return cls(model, load_sam3_inputs(path), checkpoint_version(path), device, np_batch_size)

    # -- features ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def vision_features(self, image: np.ndarray):
        pixels = self.inputs.pixels(image).to(self.device, self.dtype)
        return self.model.get_vision_features(pixel_values=pixels)

    @torch.inference_mode()
    def text_features(self, noun_phrases: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 32, D) prompt features and (N, 32) attention masks, computed once per unique NP."""
        keys = [normalize_np(p) for p in noun_phrases]
        missing = sorted({k for k in keys if k not in self._text_cache})
        if missing:
            tok = self.inputs.tokens(missing)
            ids, mask = tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)
            feats = self.model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
            for i, k in enumerate(missing):
                self._text_cache[k] = (feats[i : i + 1], mask[i : i + 1])
        return (
            torch.cat([self._text_cache[k][0] for k in keys]),
            torch.cat([self._text_cache[k][1] for k in keys]),
        )

    @torch.inference_mode()
    def forward_nps(self, image: np.ndarray, noun_phrases: list[str], vision=None) -> RawOutputs:
        """Raw detector outputs for every NP on one image, the backbone run once."""
        vision = vision if vision is not None else self.vision_features(image)
        parts: list[RawOutputs] = []
        for start in range(0, len(noun_phrases), self.np_batch_size):
            chunk = noun_phrases[start : start + self.np_batch_size]
            feats, mask = self.text_features(chunk)
            n = len(chunk)
            shared = type(vision)(
                last_hidden_state=vision.last_hidden_state.expand(n, *vision.last_hidden_state.shape[1:]),
                fpn_hidden_states=tuple(x.expand(n, *x.shape[1:]) for x in vision.fpn_hidden_states),
                fpn_position_encoding=tuple(x.expand(n, *x.shape[1:]) for x in vision.fpn_position_encoding),
            )
            out = self.model(
                vision_embeds=shared,
                text_embeds=BaseModelOutputWithPooling(pooler_output=feats),
                attention_mask=mask,
            )
            parts.append(RawOutputs(out.pred_logits, out.presence_logits, out.pred_boxes, out.pred_masks))
        return RawOutputs(
            *(torch.cat([getattr(p, f) for p in parts]) for f in RawOutputs.__dataclass_fields__)
        )

    # -- detections -------------------------------------------------------------------------------------
    def detect(
        self, image: np.ndarray, noun_phrases: list[str], score_threshold: float = 0.5
    ) -> list[Detection]:
        """One Detection per NP, in order. Instance score = sigmoid(logit) * sigmoid(presence), as in SAM 3."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"detect expects an (H, W, 3) uint8 image; got {image.shape} {image.dtype}")
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1]; got {score_threshold}")
        if not noun_phrases:
            return []
        raw = self.forward_nps(image, noun_phrases)
        return [
            self._to_detection(raw, i, image.shape[0], image.shape[1], score_threshold)
            for i in range(len(noun_phrases))
        ]

    @torch.inference_mode()
    def _to_detection(self, raw: RawOutputs, i: int, height: int, width: int, threshold: float) -> Detection:
        presence = torch.sigmoid(raw.presence_logits[i].float()).reshape(-1)[0]
        scores = torch.sigmoid(raw.pred_logits[i].float()) * presence
        keep = torch.nonzero(scores >= threshold).flatten()
        keep = keep[torch.argsort(scores[keep], descending=True, stable=True)]
        det = Detection(presence=float(presence))
        if keep.numel() == 0:
            return det
        probs = torch.sigmoid(raw.pred_masks[i, keep].float())[None]
        masks = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)[0] > 0.5
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        boxes = (raw.pred_boxes[i, keep].float().cpu() * scale).clamp(min=0)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(max=width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(max=height)
        masks_np = masks.cpu().numpy()
        for k in range(keep.numel()):
            if not masks_np[k].any():  # an empty mask is no instance: nothing to verify or annotate
                continue
            det.masks.append(rle.encode(masks_np[k]))
            det.boxes_xyxy.append([float(v) for v in boxes[k]])
            det.scores.append(float(scores[keep[k]]))
        return det
