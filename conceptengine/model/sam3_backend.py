"""SAM 3 as the engine's detector: one image, many noun phrases, instance masks as COCO RLE.

The expensive part of SAM 3 is the vision backbone, and every image is queried with many NPs (most of them
negatives), so the image is encoded once and its features are reused for all its NPs, which go through the
DETR encoder/decoder in batches. Text embeddings are cached per unique NP for the detector's lifetime.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from transformers import Sam3Model
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.sam3.modeling_sam3 import box_cxcywh_to_xyxy, inverse_sigmoid

from conceptengine.engine.checkpoints import local_checkpoint
from conceptengine.engine.ids import normalize_np
from conceptengine.model.processing import PixelSpec, Sam3Inputs, Sam3PixelProcessor, load_sam3_inputs

DEFAULT_NP_BATCH = 32  # SA-Co/HQ averages ~28 NPs per image: one forward for most images
DEFAULT_TEXT_CACHE = 4096  # NPs; ~16 KB each for the full model in bf16
_TENSOR_FIELDS = ("pred_logits", "presence_logits", "pred_boxes", "pred_masks")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Detection:
    """One image-NP pair's result. Instances are sorted by score, highest first."""

    presence: float
    masks: list[str] = field(default_factory=list)  # COCO compressed RLE counts at the original image size
    # Pixels: each mask's own box. An instance is its mask (verifiers crop by its box, reviewers and the SA-Co
    # export read it); the box head's can disagree (the demo SAM 3's by 40% of the object's size at the median).
    boxes_xyxy: list[list[float]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


@dataclass
class RawOutputs:
    """Detector outputs for a batch of NPs on one image, before thresholding (for tests and training)."""

    pred_logits: torch.Tensor  # (N, Q)
    presence_logits: torch.Tensor  # (N, 1)
    pred_boxes: torch.Tensor  # (N, Q, 4) normalized xyxy
    pred_masks: torch.Tensor  # (N, Q, h, w) logits; (S, Q, h, w) for the S NPs of mask_rows when set
    # NP i's masks are pred_masks[mask_rows[i]]; -1 means none were computed (no instance above threshold).
    mask_rows: list[int] | None = None


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
    """SAM 3 for many NPs per image: vision once per image, text once per NP (LRU), NPs batched.

    Everything runs under `torch.inference_mode`; post-processing (sigmoid, upsampling, binarizing) touches
    only the instances above the score threshold, on the model's device, and RLE-encodes them in one
    pycocotools call per chunk, so on a GPU the detector's time is the model's time.
    """

    def __init__(
        self,
        model: Sam3Model,
        inputs: Sam3Inputs,
        version: str,
        device: str = "cpu",
        np_batch_size: int = DEFAULT_NP_BATCH,
        text_cache_size: int = DEFAULT_TEXT_CACHE,
        pixel_spec: PixelSpec | None = None,
    ):
        if np_batch_size < 1:
            raise ValueError(f"np_batch_size must be >= 1; got {np_batch_size}")
        if text_cache_size < 1:
            raise ValueError(f"text_cache_size must be >= 1; got {text_cache_size}")
        self.model = model.eval()
        self.inputs = inputs
        self.version = version
        self.device = torch.device(device)
        self.dtype = next(model.parameters()).dtype
        self.np_batch_size = np_batch_size
        self.text_cache_size = text_cache_size
        self.pixel_spec = pixel_spec or _spec_of(inputs.image_processor)
        # LRU keyed by normalized NP: most NPs recur across images (ontology concepts, hard negatives), so a
        # long run encodes each once; the bound keeps an open-vocabulary run from growing GPU memory forever.
        self._text_cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._hits = 0
        self._misses = 0

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        device: str = "cpu",
        dtype: str | None = None,
        np_batch_size: int = DEFAULT_NP_BATCH,
        text_cache_size: int = DEFAULT_TEXT_CACHE,
    ) -> Sam3Detector:
        """dtype None means bfloat16 on CUDA (SAM 3's inference precision) and float32 elsewhere."""
        path = local_checkpoint(path)  # a remote run's checkpoint: its local mirror
        if not Path(path, "config.json").exists():
            raise FileNotFoundError(f"no SAM 3 checkpoint at {path} (config.json missing); check sam3.model")
        dtype = dtype or default_dtype(device)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)}")
        if np_batch_size < 1:
            raise ValueError(f"np_batch_size must be >= 1; got {np_batch_size}")
        model = Sam3Model.from_pretrained(path)
        model = model.to(device=device, dtype=_DTYPES[dtype])
        return cls(
            model,
            load_sam3_inputs(path),
            checkpoint_version(path),
            device,
            np_batch_size,
            text_cache_size,
            PixelSpec.from_checkpoint(path),
        )

    # -- features ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def vision_features(self, image: np.ndarray):
        pixels = self.inputs.pixels(image).to(self.device, self.dtype)
        return self.model.get_vision_features(pixel_values=pixels)

    @torch.inference_mode()
    def vision_features_resized(self, resized: torch.Tensor):
        """Features from the uint8 (1, 3, h, w) image `decode_images` made: only normalization happens here."""
        pixels = self.pixel_spec.normalize(resized.to(self.device, non_blocking=True)).to(self.dtype)
        return self.model.get_vision_features(pixel_values=pixels)

    def cache_info(self) -> dict[str, int]:
        """Text-embedding cache counters, per NP looked up: for logs and for tests of reuse."""
        return {
            "hits": self._hits,
            "misses": self._misses,
            "size": len(self._text_cache),
            "capacity": self.text_cache_size,
        }

    @torch.inference_mode()
    def text_features(self, noun_phrases: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 32, D) prompt features and (N, 32) attention masks, computed once per unique NP."""
        keys = [normalize_np(p) for p in noun_phrases]
        missing = sorted({k for k in keys if k not in self._text_cache})
        self._misses += len(missing)
        self._hits += len(keys) - len(missing)
        fresh: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if missing:
            tok = self.inputs.tokens(missing)
            ids, mask = tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)
            feats = self.model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
            fresh = {k: (feats[i : i + 1], mask[i : i + 1]) for i, k in enumerate(missing)}
        for k in keys:
            if k in self._text_cache:
                self._text_cache.move_to_end(k)
        for k, v in fresh.items():
            self._text_cache[k] = v
        # Evict least recently used only after this call's entries are gathered below, so a batch larger
        # than the cache still works.
        found = [fresh.get(k) or self._text_cache[k] for k in keys]
        while len(self._text_cache) > self.text_cache_size:
            self._text_cache.popitem(last=False)
        return torch.cat([f for f, _ in found]), torch.cat([m for _, m in found])

    @torch.inference_mode()
    def forward_nps(self, image: np.ndarray | None, noun_phrases: list[str], vision=None) -> RawOutputs:
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
        if len(parts) == 1:
            return parts[0]
        return RawOutputs(*(torch.cat([getattr(p, f) for p in parts]) for f in _TENSOR_FIELDS))

    @torch.inference_mode()
    def forward_scored(self, vision, noun_phrases: list[str], threshold: float) -> RawOutputs:
        """Like `forward_nps`, but the mask decoder runs only for NPs with an instance scoring >= threshold.

        Scores and boxes need the DETR encoder and decoder only; masks are wanted only for kept instances,
        and most pairs are negatives (88.5% in SA-Co/HQ), so skipping the mask decoder for them changes no
        output and saves most of the per-NP compute. The steps are Sam3Model.forward's, text prompts only.
        """
        parts: list[RawOutputs] = []
        for start in range(0, len(noun_phrases), self.np_batch_size):
            parts.append(
                self._scored_chunk(vision, noun_phrases[start : start + self.np_batch_size], threshold)
            )
        if len(parts) == 1:
            return parts[0]
        rows: list[int] = []
        offset = 0
        for p in parts:
            rows += [r + offset if r >= 0 else -1 for r in p.mask_rows]
            offset += p.pred_masks.shape[0]
        return RawOutputs(
            *(torch.cat([getattr(p, f) for p in parts]) for f in _TENSOR_FIELDS), mask_rows=rows
        )

    def _scored_chunk(self, vision, chunk: list[str], threshold: float) -> RawOutputs:
        m = self.model
        feats, mask = self.text_features(chunk)
        n = len(chunk)
        fpn = [x.expand(n, *x.shape[1:]) for x in vision.fpn_hidden_states[:-1]]
        pos = [x.expand(n, *x.shape[1:]) for x in vision.fpn_position_encoding[:-1]]
        text_mask = mask.bool()
        enc = m.detr_encoder(
            vision_features=[fpn[-1]], text_features=feats, vision_pos_embeds=[pos[-1]], text_mask=text_mask
        )
        dec = m.detr_decoder(
            vision_features=enc.last_hidden_state,
            text_features=enc.text_features,
            vision_pos_encoding=enc.pos_embeds_flattened,
            text_mask=text_mask,
            spatial_shapes=enc.spatial_shapes,
        )
        offsets = m.detr_decoder.box_head(dec.intermediate_hidden_states)
        boxes = box_cxcywh_to_xyxy((inverse_sigmoid(dec.reference_boxes) + offsets).sigmoid())[-1]
        logits = m.dot_product_scoring(
            decoder_hidden_states=dec.intermediate_hidden_states,
            text_features=enc.text_features,
            text_mask=text_mask,
        ).squeeze(-1)[-1]
        presence = dec.presence_logits[-1]
        scores = torch.sigmoid(logits.float()) * torch.sigmoid(presence.float()).reshape(n, -1)[:, :1]
        selected = torch.nonzero((scores >= threshold).any(dim=1)).flatten()
        rows = [-1] * n
        if selected.numel() == 0:
            masks = logits.new_zeros((0, logits.shape[1], 1, 1))
            return RawOutputs(logits, presence, boxes, masks, rows)
        k = selected.numel()
        for j, i in enumerate(selected.cpu().tolist()):
            rows[i] = j
        sub = selected if k < n else slice(None)
        masks = m.mask_decoder(
            decoder_queries=dec.intermediate_hidden_states[-1][sub],
            backbone_features=[x[:k] for x in fpn],  # every NP shares the image's features
            encoder_hidden_states=enc.last_hidden_state[sub],
            prompt_features=feats[sub],
            prompt_mask=text_mask[sub],
        ).pred_masks
        return RawOutputs(logits, presence, boxes, masks, rows)

    # -- detections -------------------------------------------------------------------------------------
    def detect(
        self,
        image: np.ndarray,
        noun_phrases: list[str],
        score_threshold: float = 0.5,
        max_instances: int | None = None,
    ) -> list[Detection]:
        """One Detection per NP, in order. Instance score = sigmoid(logit) * sigmoid(presence), as in SAM 3.

        `max_instances` keeps the best non-empty instances of each NP and RLE-encodes no more than that.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"detect expects an (H, W, 3) uint8 image; got {image.shape} {image.dtype}")
        _check_threshold(score_threshold, max_instances)
        if not noun_phrases:
            return []
        raw = self.forward_scored(self.vision_features(image), noun_phrases, score_threshold)
        return self.postprocess(raw, image.shape[0], image.shape[1], score_threshold, max_instances)

    def detect_resized(
        self,
        resized: torch.Tensor,
        height: int,
        width: int,
        noun_phrases: list[str],
        score_threshold: float = 0.5,
        max_instances: int | None = None,
    ) -> list[Detection]:
        """`detect` on an image `decode_images` already resized: (1, 3, h, w) uint8, original height x width."""
        if resized.dtype != torch.uint8 or resized.ndim != 4 or resized.shape[:2] != (1, 3):
            raise ValueError(
                f"detect_resized expects a (1, 3, h, w) uint8 tensor; got {tuple(resized.shape)}"
            )
        _check_threshold(score_threshold, max_instances)
        if not noun_phrases:
            return []
        raw = self.forward_scored(self.vision_features_resized(resized), noun_phrases, score_threshold)
        return self.postprocess(raw, height, width, score_threshold, max_instances)

    @torch.inference_mode()
    def postprocess(
        self,
        raw: RawOutputs,
        height: int,
        width: int,
        threshold: float,
        max_instances: int | None = None,
        chunk: int = 64,
    ) -> list[Detection]:
        """Thresholded, sorted, upsampled, RLE-encoded instances of every NP of one image at once.

        Only the (NP, query) cells above the threshold are upsampled, `chunk` at a time so memory stays
        bounded at 1008 px; an NP that already has `max_instances` non-empty masks gets no more work.
        """
        n = raw.pred_logits.shape[0]
        presence = torch.sigmoid(raw.presence_logits.float()).reshape(n, -1)[:, 0]
        scores = torch.sigmoid(raw.pred_logits.float()) * presence[:, None]
        order = torch.argsort(scores, dim=1, descending=True, stable=True)
        sorted_scores = torch.gather(scores, 1, order)
        cand = torch.nonzero(sorted_scores >= threshold)  # (K, 2): NP, rank; row-major, so best first per NP
        cand_np = cand[:, 0]
        cand_q = order[cand[:, 0], cand[:, 1]]
        cand_scores = sorted_scores[cand[:, 0], cand[:, 1]].cpu().tolist()
        presence_l = presence.cpu().tolist()
        dets = [Detection(presence=p) for p in presence_l]
        if cand.shape[0] == 0:
            return dets
        np_l = cand_np.cpu().tolist()
        cap = max_instances if max_instances is not None else cand.shape[0]
        if raw.mask_rows is not None:
            mask_rows = torch.tensor(raw.mask_rows, device=cand.device)
            if bool((mask_rows[cand_np] < 0).any()):
                raise ValueError("postprocess: masks were not computed for an NP above the threshold")
        done = [0] * n
        todo = list(range(cand.shape[0]))
        while todo:
            # Take the next chunk of candidates whose NP still needs instances; their order is kept.
            take: list[int] = []
            rest: list[int] = []
            pending = list(done)
            for k in todo:
                i = np_l[k]
                if done[i] >= cap:
                    continue  # this NP is full: its remaining candidates are never upsampled
                if len(take) < chunk and pending[i] < cap:
                    take.append(k)
                    pending[i] += 1
                else:
                    rest.append(k)  # needed only if some of the taken ones come out empty
            if not take:
                break
            sel = torch.tensor(take, device=cand.device)
            np_rows = cand_np[sel] if raw.mask_rows is None else mask_rows[cand_np[sel]]
            probs = torch.sigmoid(raw.pred_masks[np_rows, cand_q[sel]].float())[None]
            binary = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)[0] > 0.5
            nonempty = binary.flatten(1).any(1).cpu().tolist()
            # (K, W, H) C-order is (H, W, K) Fortran order: what pycocotools encodes in one call.
            stack = binary.transpose(1, 2).to(torch.uint8).contiguous().cpu().numpy()
            keep_pos = [j for j, ok in enumerate(nonempty) if ok]
            if keep_pos:
                encoded = mask_utils.encode(stack[keep_pos].transpose(2, 1, 0))
                boxes = mask_utils.toBbox(encoded)  # (K, 4) x, y, w, h of each mask
                boxes[:, 2:] += boxes[:, :2]
                for j, enc, box in zip(keep_pos, encoded, boxes.tolist(), strict=True):
                    k = take[j]
                    i = np_l[k]
                    dets[i].masks.append(enc["counts"].decode("ascii"))
                    dets[i].boxes_xyxy.append(box)
                    dets[i].scores.append(cand_scores[k])
                    done[i] += 1
            todo = rest
        return dets


def default_dtype(device: str) -> str:
    """bf16 where SAM 3 runs fast and accurately in it (CUDA); fp32 on CPU, where bf16 matmuls are slow."""
    return "bfloat16" if str(device).startswith("cuda") else "float32"


def _check_threshold(score_threshold: float, max_instances: int | None) -> None:
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1]; got {score_threshold}")
    if max_instances is not None and max_instances < 1:
        raise ValueError(f"max_instances must be >= 1 or None; got {max_instances}")


def _spec_of(image_processor) -> PixelSpec:
    """The normalization half of whichever image processor `load_sam3_inputs` returned."""
    if isinstance(image_processor, Sam3PixelProcessor):
        return image_processor.spec
    return PixelSpec.from_config(image_processor.to_dict())
