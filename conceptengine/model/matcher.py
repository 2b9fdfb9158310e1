"""Hungarian matching between a pair's detector queries and its ground-truth instances (DETR's matcher).

A set-prediction loss needs a one-to-one assignment of queries to instances before any per-instance loss
can be computed; the assignment minimises DETR's cost (focal class cost + L1 box + GIoU, optionally mask
dice), so each instance is supervised by the query that is already closest to predicting it. Box layout:
predictions arrive as normalized xyxy (what `Sam3Model` returns), targets as normalized cxcywh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from transformers.image_transforms import corners_to_center_format
from transformers.models.sam3.modeling_sam3 import box_cxcywh_to_xyxy

# transformers' generalized_box_iou has no epsilon: a collapsed predicted box (common early in training) gives
# NaN there. Box format conversions are transformers' own.
_EPS = 1e-7


def box_iou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise IoU of xyxy boxes (N, 4) x (M, 4) -> (IoU, union), each (N, M)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / (union + _EPS), union


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU of xyxy boxes (N, 4) x (M, 4) -> (N, M). Degenerate (zero-area) boxes are allowed:
    the epsilon keeps the gradient finite, which matters early in training when predicted boxes collapse."""
    iou, union = box_iou(a, b)
    lt_c = torch.min(a[:, None, :2], b[None, :, :2])
    rb_c = torch.max(a[:, None, 2:], b[None, :, 2:])
    hull = (rb_c - lt_c).clamp(min=0).prod(-1)
    return iou - (hull - union) / (hull + _EPS)


def batch_dice_cost(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss between every predicted mask (Q, h, w) and every target mask (M, h, w) -> (Q, M)."""
    p = mask_logits.sigmoid().flatten(1)
    t = targets.flatten(1).to(p.dtype)
    num = 2 * p @ t.T
    den = p.sum(-1)[:, None] + t.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


@dataclass(frozen=True)
class MatcherWeights:
    """DETR / Deformable-DETR defaults: the class cost is the focal-loss difference, as in the loss."""

    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    cost_mask: float = 0.0  # dice; off by default because masks cost a (Q x M x h x w) product per pair
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


class HungarianMatcher:
    """Per pair: (query indices, target indices) of the minimum-cost one-to-one assignment."""

    def __init__(self, weights: MatcherWeights | None = None):
        self.w = weights or MatcherWeights()
        if (
            self.w.cost_class == 0
            and self.w.cost_bbox == 0
            and self.w.cost_giou == 0
            and self.w.cost_mask == 0
        ):
            raise ValueError("HungarianMatcher: all matching costs are 0; at least one must be positive")

    def cost_matrix(
        self,
        logits: torch.Tensor,
        boxes_xyxy: torch.Tensor,
        target_boxes_cxcywh: torch.Tensor,
        mask_logits: torch.Tensor | None = None,
        target_masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(Q, M) cost for one pair: logits (Q,), boxes (Q, 4) xyxy, targets (M, 4) cxcywh."""
        w = self.w
        prob = logits.float().sigmoid()
        alpha, gamma = w.focal_alpha, w.focal_gamma
        neg = (1 - alpha) * prob**gamma * -torch.log(1 - prob + 1e-8)
        pos = alpha * (1 - prob) ** gamma * -torch.log(prob + 1e-8)
        cost = w.cost_class * (pos - neg)[:, None]
        tgt_xyxy = box_cxcywh_to_xyxy(target_boxes_cxcywh.float())
        pred = boxes_xyxy.float()
        cost = cost + w.cost_bbox * torch.cdist(
            corners_to_center_format(pred), target_boxes_cxcywh.float(), p=1
        )
        cost = cost - w.cost_giou * generalized_box_iou(pred, tgt_xyxy)
        if w.cost_mask and mask_logits is not None and target_masks is not None:
            cost = cost + w.cost_mask * batch_dice_cost(mask_logits.float(), target_masks)
        return cost

    @torch.no_grad()
    def match_one(
        self,
        logits: torch.Tensor,
        boxes_xyxy: torch.Tensor,
        target_boxes_cxcywh: torch.Tensor,
        mask_logits: torch.Tensor | None = None,
        target_masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_targets = int(target_boxes_cxcywh.shape[0])
        if n_targets == 0:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty
        cost = self.cost_matrix(logits, boxes_xyxy, target_boxes_cxcywh, mask_logits, target_masks)
        cost = torch.nan_to_num(cost, nan=1e6, posinf=1e6, neginf=-1e6).cpu().numpy()
        rows, cols = linear_sum_assignment(cost)  # a crowd larger than Q leaves its surplus unmatched
        order = np.argsort(cols, kind="stable")  # sorted by target index: stable across permutations of Q
        return torch.as_tensor(rows[order], dtype=torch.long), torch.as_tensor(cols[order], dtype=torch.long)

    def __call__(
        self,
        logits: torch.Tensor,
        boxes_xyxy: torch.Tensor,
        target_boxes: list[torch.Tensor],
        mask_logits: torch.Tensor | None = None,
        target_masks: list[torch.Tensor] | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match a batch: logits (N, Q), boxes (N, Q, 4) xyxy, one (M_i, 4) cxcywh target tensor per pair."""
        if logits.shape[0] != len(target_boxes):
            raise ValueError(f"matcher: {logits.shape[0]} predictions but {len(target_boxes)} target sets")
        out = []
        for i, tb in enumerate(target_boxes):
            ml = mask_logits[i] if mask_logits is not None else None
            tm = target_masks[i] if target_masks is not None else None
            out.append(self.match_one(logits[i], boxes_xyxy[i], tb.to(logits.device), ml, tm))
        return out


@dataclass(frozen=True)
class OneToManyWeights:
    """SAM 3's one-to-many matcher settings (DAC-DETR): quality = alpha * score + (1 - alpha) * box IoU."""

    alpha: float = 0.3
    threshold: float = 0.4  # a query is assigned only above this quality
    topk: int = 4  # at most this many queries per target


class OneToManyMatcher:
    """Per pair: every target gets up to `topk` queries whose quality beats `threshold` (a query keeps only
    its best target). Supervising several queries per instance, on a decoder pass without self-attention
    that is dropped at inference, gives DETR's queries denser positive signal early in training."""

    def __init__(self, weights: OneToManyWeights | None = None):
        self.w = weights or OneToManyWeights()

    @torch.no_grad()
    def match_one(
        self, logits: torch.Tensor, boxes_xyxy: torch.Tensor, target_boxes_cxcywh: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        empty = torch.zeros(0, dtype=torch.long, device=logits.device)
        if target_boxes_cxcywh.shape[0] == 0:
            return empty, empty
        iou, _ = box_iou(boxes_xyxy.float(), box_cxcywh_to_xyxy(target_boxes_cxcywh.float()))
        quality = self.w.alpha * logits.float().sigmoid()[:, None] + (1 - self.w.alpha) * iou  # (Q, M)
        k = min(self.w.topk, quality.shape[0])
        in_top = torch.zeros_like(quality, dtype=torch.bool)
        in_top.scatter_(0, quality.topk(k, dim=0).indices, True)
        allowed = in_top & (quality > self.w.threshold)
        best = torch.where(allowed, quality, torch.full_like(quality, -1.0)).argmax(dim=1)  # (Q,)
        rows = torch.nonzero(allowed.any(dim=1)).flatten()
        cols = best[rows]
        order = torch.argsort(cols, stable=True)
        return rows[order], cols[order]

    def __call__(
        self, logits: torch.Tensor, boxes_xyxy: torch.Tensor, target_boxes: list[torch.Tensor]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if logits.shape[0] != len(target_boxes):
            raise ValueError(f"matcher: {logits.shape[0]} predictions but {len(target_boxes)} target sets")
        return [
            self.match_one(logits[i], boxes_xyxy[i], tb.to(logits.device))
            for i, tb in enumerate(target_boxes)
        ]
