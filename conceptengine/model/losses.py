"""SAM 3's detector losses, DETR-style, applied to every decoder layer.

Why each term (SAM 3 paper, DETR, Deformable DETR):
- Hungarian matching + sigmoid focal loss on ALL queries: matched queries learn "this is an instance",
  the rest "no object"; focal keeps the many easy negatives from drowning the few positives.
- Presence-head BCE: 1 iff the pair has any instance. Negative pairs (most of SA-Co) teach "absent"
  through this head, which decouples recognition from localization (final score = query * presence).
- L1 + GIoU on matched boxes; dice + sigmoid focal on matched masks.
- Auxiliary losses on every decoder layer: without them a small DETR barely trains in CPU budgets.
- Dense supervision of `semantic_seg` with the union of a pair's GT masks: a per-pixel signal from the
  first step that trains the pixel decoder long before the matching stabilises.
- Optional one-to-many branch (SAM 3's DAC-DETR, `LossWeights.o2m`): the same queries go through the
  decoder a second time without self-attention, and each instance supervises up to four of them (class and
  box terms). The branch only trains; inference never runs it.

`Sam3Model.forward` returns only the last decoder layer; `detector_outputs` runs that same forward and
captures every layer's logits (from `dot_product_scoring`) and boxes (recomputed with the decoder's own
`box_head` from its intermediate hidden states), so training and inference share one code path.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import Sam3Model
from transformers.image_transforms import corners_to_center_format
from transformers.models.sam3.modeling_sam3 import box_cxcywh_to_xyxy

from conceptengine.model.matcher import (
    HungarianMatcher,
    MatcherWeights,
    OneToManyMatcher,
    box_iou,
    generalized_box_iou,
)


@dataclass
class DetectorOutputs:
    """Predictions of every decoder layer for N image-NP pairs (layer -1 is what inference uses)."""

    logits: torch.Tensor  # (L, N, Q) query logits
    boxes: torch.Tensor  # (L, N, Q, 4) normalized xyxy
    presence: torch.Tensor  # (L, N) presence logits
    masks: torch.Tensor  # (N, Q, h, w) mask logits of the last layer (the mask head runs once)
    semantic: torch.Tensor | None = None  # (N, 1, h, w) semantic logits
    o2m_logits: torch.Tensor | None = None  # (L, N, Q) the one-to-many branch, when it was run
    o2m_boxes: torch.Tensor | None = None  # (L, N, Q, 4)


@dataclass
class PairTargets:
    """Ground truth of N pairs: per pair (M_i, 4) normalized cxcywh boxes and (M_i, h, w) masks in [0, 1]."""

    boxes: list[torch.Tensor]
    masks: list[torch.Tensor]
    is_negative: torch.Tensor = field(default=None)  # (N,) bool; derived from the boxes when omitted

    def __post_init__(self) -> None:
        if len(self.boxes) != len(self.masks):
            raise ValueError(f"PairTargets: {len(self.boxes)} box sets but {len(self.masks)} mask sets")
        if self.is_negative is None:
            self.is_negative = torch.tensor([b.shape[0] == 0 for b in self.boxes], dtype=torch.bool)

    def to(self, device: torch.device | str) -> PairTargets:
        return PairTargets(
            [b.to(device) for b in self.boxes],
            [m.to(device) for m in self.masks],
            self.is_negative.to(device),
        )


@dataclass(frozen=True)
class LossWeights:
    """Term weights. Box and class weights follow Deformable DETR; mask focal:dice follows SAM (20:1-ish)."""

    cls: float = 2.0
    bbox: float = 5.0
    giou: float = 2.0
    mask_focal: float = 20.0
    mask_dice: float = 2.0
    presence: float = 2.0
    semantic_bce: float = 2.0
    semantic_dice: float = 1.0
    aux: bool = True  # the same class / box / presence losses on every earlier decoder layer
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # Whether the query scores are also trained on NEGATIVE pairs (every query -> 0). SAM 3 does not when it
    # has a presence head (its IABCE loss keeps the class term only where the pair has an instance): presence
    # alone learns "absent", and the queries learn which objects of an image match a concept that is there
    # (final score = query * presence). On the demo SAM 3, 2,000 steps continued each way from the same
    # checkpoint: gold cgF1 6.9 without vs. 5.7 with.
    negative_pair_cls: bool = False
    # Weight of the one-to-many (DAC) branch's class + box terms; 0 runs no branch. SAM 3 trains with 2.0.
    o2m: float = 0.0
    # SAM 3's IoU-aware class loss (IABCE): a matched query's target is prob^a * IoU^(1 - a) with its box
    # (a = iou_aware_alpha, SAM 3's 0.25), not 1, so the score ranks queries by how well they localise;
    # positives weigh focal_alpha and negatives 1 - focal_alpha, each negative times prob^focal_gamma.
    iou_aware_cls: bool = False
    iou_aware_alpha: float = 0.25


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Element-wise focal loss (RetinaNet); alpha < 0 disables the class balancing."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def dice_loss(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-mask dice loss (K, h, w) -> (K,); +1 smoothing so an empty target with an empty prediction is 0."""
    p = mask_logits.sigmoid().flatten(1)
    t = targets.flatten(1)
    return 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)


class Sam3Criterion:
    """The full training loss: `criterion(outputs, targets)` -> dict of named terms plus their sum, `loss`."""

    def __init__(self, weights: LossWeights | None = None, matcher: HungarianMatcher | None = None):
        self.w = weights or LossWeights()
        self.matcher = matcher or HungarianMatcher(
            MatcherWeights(focal_alpha=self.w.focal_alpha, focal_gamma=self.w.focal_gamma)
        )
        self.o2m_matcher = OneToManyMatcher()

    # -- per-layer terms --------------------------------------------------------------------------------
    def _class_box(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        targets: PairTargets,
        matches: list[tuple[torch.Tensor, torch.Tensor]],
        num_boxes: float,
    ) -> dict[str, torch.Tensor]:
        w = self.w
        cls_target = torch.zeros_like(logits)
        src_boxes, tgt_boxes = [], []
        for i, (q, t) in enumerate(matches):
            cls_target[i, q] = 1.0
            src_boxes.append(boxes[i, q])
            tgt_boxes.append(targets.boxes[i][t].to(boxes.dtype))
        if w.iou_aware_cls:
            loss_cls = self._iou_aware_cls(logits, cls_target, src_boxes, tgt_boxes, matches)
        else:
            loss_cls = sigmoid_focal_loss(logits, cls_target, w.focal_alpha, w.focal_gamma)
        if not w.negative_pair_cls:
            loss_cls = loss_cls * (~targets.is_negative).to(loss_cls.dtype)[:, None]
        loss_cls = loss_cls.sum() / num_boxes
        if sum(len(q) for q, _ in matches):
            src = torch.cat(src_boxes)
            tgt = torch.cat(tgt_boxes)
            loss_bbox = F.l1_loss(corners_to_center_format(src), tgt, reduction="sum") / num_boxes
            giou = torch.diag(generalized_box_iou(src, box_cxcywh_to_xyxy(tgt)))
            loss_giou = (1 - giou).sum() / num_boxes
        else:  # an all-negative batch: no box to regress, but keep the graph (and DDP) consistent
            loss_bbox = boxes.sum() * 0.0
            loss_giou = boxes.sum() * 0.0
        return {"cls": loss_cls, "bbox": loss_bbox, "giou": loss_giou}

    def _iou_aware_cls(
        self,
        logits: torch.Tensor,
        matched: torch.Tensor,
        src_boxes: list[torch.Tensor],
        tgt_boxes: list[torch.Tensor],
        matches: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """Element-wise IABCE (SAM 3's `IABCEMdetr`): soft targets for matched queries, 0 for the rest."""
        w = self.w
        prob = logits.sigmoid()
        soft = torch.zeros_like(logits)
        if src_boxes and sum(len(q) for q, _ in matches):
            with torch.no_grad():
                src = torch.cat(src_boxes)
                iou = torch.diag(box_iou(src, box_cxcywh_to_xyxy(torch.cat(tgt_boxes)))[0])
                rows = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(matches)])
                cols = torch.cat([q for q, _ in matches])
                t = prob[rows, cols] ** w.iou_aware_alpha * iou.clamp(min=0) ** (1 - w.iou_aware_alpha)
                soft[rows, cols] = t.clamp(min=0.01).to(soft.dtype)
        pos = F.binary_cross_entropy_with_logits(logits, soft, reduction="none") * matched * w.focal_alpha
        neg = F.binary_cross_entropy_with_logits(logits, matched, reduction="none") * (1 - matched)
        return pos + neg * (1 - w.focal_alpha) * prob**w.focal_gamma

    def _presence(self, presence: torch.Tensor, targets: PairTargets) -> torch.Tensor:
        present = (~targets.is_negative).to(presence.dtype)
        return F.binary_cross_entropy_with_logits(presence, present)

    def _masks(
        self,
        masks: torch.Tensor,
        targets: PairTargets,
        matches: list[tuple[torch.Tensor, torch.Tensor]],
        num_boxes: float,
    ) -> dict[str, torch.Tensor]:
        src = [masks[i, q] for i, (q, _) in enumerate(matches) if len(q)]
        if not src:
            zero = masks.sum() * 0.0
            return {"mask_focal": zero, "mask_dice": zero}
        tgt = [targets.masks[i][t] for i, (q, t) in enumerate(matches) if len(q)]
        src_m = torch.cat(src)
        tgt_m = torch.cat(tgt).to(src_m.dtype)
        if tgt_m.shape[-2:] != src_m.shape[-2:]:
            raise ValueError(
                f"target masks are {tuple(tgt_m.shape[-2:])}, predicted masks {tuple(src_m.shape[-2:])}; "
                "build targets at the model's mask resolution"
            )
        focal = sigmoid_focal_loss(src_m, tgt_m, self.w.focal_alpha, self.w.focal_gamma).flatten(1).mean(-1)
        return {"mask_focal": focal.sum() / num_boxes, "mask_dice": dice_loss(src_m, tgt_m).sum() / num_boxes}

    def _semantic(self, semantic: torch.Tensor, targets: PairTargets) -> dict[str, torch.Tensor]:
        h, w = semantic.shape[-2:]
        union = torch.stack(
            [
                m.amax(0) if m.shape[0] else torch.zeros(h, w, device=semantic.device, dtype=semantic.dtype)
                for m in targets.masks
            ]
        ).to(semantic.dtype)
        if union.shape[-2:] != (h, w):
            union = F.interpolate(union[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        logits = semantic[:, 0]
        bce = F.binary_cross_entropy_with_logits(logits, union)
        pos = ~targets.is_negative.to(logits.device)
        dice = dice_loss(logits[pos], union[pos]).mean() if pos.any() else logits.sum() * 0.0
        return {"semantic_bce": bce, "semantic_dice": dice}

    # -- total ------------------------------------------------------------------------------------------
    def __call__(self, outputs: DetectorOutputs, targets: PairTargets) -> dict[str, torch.Tensor]:
        w = self.w
        n_layers = outputs.logits.shape[0]
        if outputs.logits.shape[1] != len(targets.boxes):
            raise ValueError(
                f"criterion: {outputs.logits.shape[1]} predictions, {len(targets.boxes)} targets"
            )
        num_boxes = float(max(sum(int(b.shape[0]) for b in targets.boxes), 1))
        terms: dict[str, torch.Tensor] = {}
        layers = range(n_layers) if w.aux else [n_layers - 1]
        total = outputs.logits.new_zeros(())
        for layer in layers:
            last = layer == n_layers - 1
            mask_logits = outputs.masks if last and self.matcher.w.cost_mask else None
            matches = self.matcher(
                outputs.logits[layer],
                outputs.boxes[layer],
                targets.boxes,
                mask_logits,
                targets.masks if mask_logits is not None else None,
            )
            layer_terms = self._class_box(
                outputs.logits[layer], outputs.boxes[layer], targets, matches, num_boxes
            )
            layer_terms["presence"] = self._presence(outputs.presence[layer], targets)
            if last:
                layer_terms.update(self._masks(outputs.masks, targets, matches, num_boxes))
                if outputs.semantic is not None:
                    layer_terms.update(self._semantic(outputs.semantic, targets))
            suffix = "" if last else f"_aux{layer}"
            for name, value in layer_terms.items():
                terms[name + suffix] = value
                total = total + getattr(w, name) * value
        if w.o2m and outputs.o2m_logits is not None:
            total = total + w.o2m * self._one_to_many(outputs, targets, layers, num_boxes, terms)
        terms["loss"] = total
        return terms

    def _one_to_many(
        self,
        outputs: DetectorOutputs,
        targets: PairTargets,
        layers: range | list[int],
        num_boxes: float,
        terms: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """The DAC branch's class and box terms, added to `terms` as o2m_*; returns their weighted sum.
        As in SAM 3, the last layer is matched one-to-many and earlier layers one-to-one."""
        n_layers = outputs.o2m_logits.shape[0]
        total = outputs.o2m_logits.new_zeros(())
        for layer in layers:
            logits, boxes = outputs.o2m_logits[layer], outputs.o2m_boxes[layer]
            last = layer == n_layers - 1
            if last:
                matches = self.o2m_matcher(logits, boxes, targets.boxes)
            else:
                matches = self.matcher(logits, boxes, targets.boxes)
            suffix = "" if last else f"_aux{layer}"
            for name, value in self._class_box(logits, boxes, targets, matches, num_boxes).items():
                terms[f"o2m_{name}{suffix}"] = value
                total = total + getattr(self.w, name) * value
        return total


class _NoSelfAttention(torch.nn.Module):
    """Stands in for a decoder layer's query self-attention: adds nothing (DAC's one-to-many pass)."""

    def forward(self, query: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, None]:
        return torch.zeros_like(query), None


@contextmanager
def _without_self_attention(decoder):
    saved = [layer.self_attn for layer in decoder.layers]
    try:
        for layer in decoder.layers:
            layer.self_attn = _NoSelfAttention()
        yield
    finally:
        for layer, attn in zip(decoder.layers, saved, strict=True):
            layer.self_attn = attn


def _layer_boxes(decoder, decoded) -> torch.Tensor:
    """Every layer's boxes (L, N, Q, 4) xyxy, refined from its reference boxes as the model's forward does."""
    ref = decoded.reference_boxes.clamp(0, 1)  # (L, N, Q, 4) cxcywh, before each layer's refinement
    ref_logit = torch.log(ref.clamp(min=1e-3) / (1 - ref).clamp(min=1e-3))  # transformers' inverse_sigmoid
    return box_cxcywh_to_xyxy((ref_logit + decoder.box_head(decoded.intermediate_hidden_states)).sigmoid())


def detector_outputs(
    model: Sam3Model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    pixel_values: torch.Tensor | None = None,
    vision_embeds=None,
    one_to_many: bool = False,
) -> DetectorOutputs:
    """Run `model`'s own forward once and keep every decoder layer's predictions.

    Hooks read the DETR decoder's per-layer states and the query scores of all layers, which the forward
    computes and then drops; only the per-layer boxes are recomputed (one small MLP). With `one_to_many`,
    the decoder runs once more on the same inputs without self-attention (SAM 3's DAC branch).
    """
    captured: dict[str, object] = {}

    def keep(name: str):
        def hook(_module, _args, kwargs, output):
            captured[name] = output
            captured[name + "_kwargs"] = kwargs

        return hook

    handles = [
        model.detr_decoder.register_forward_hook(keep("decoder"), with_kwargs=True),
        model.dot_product_scoring.register_forward_hook(keep("scores"), with_kwargs=True),
    ]
    try:
        out = model(
            pixel_values=pixel_values,
            vision_embeds=vision_embeds,
            input_ids=input_ids,
            attention_mask=attention_mask,
        )
    finally:
        for h in handles:
            h.remove()
    dec = captured["decoder"]
    o2m_logits = o2m_boxes = None
    if one_to_many:
        with _without_self_attention(model.detr_decoder):
            o2m = model.detr_decoder(**captured["decoder_kwargs"])
        scoring_kwargs = dict(captured["scores_kwargs"], decoder_hidden_states=o2m.intermediate_hidden_states)
        o2m_logits = model.dot_product_scoring(**scoring_kwargs).squeeze(-1)
        o2m_boxes = _layer_boxes(model.detr_decoder, o2m)
    return DetectorOutputs(
        logits=captured["scores"].squeeze(-1),
        boxes=_layer_boxes(model.detr_decoder, dec),
        presence=dec.presence_logits.squeeze(-1),
        masks=out.pred_masks,
        semantic=out.semantic_seg,
        o2m_logits=o2m_logits,
        o2m_boxes=o2m_boxes,
    )
