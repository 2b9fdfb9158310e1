"""SA-Co metrics: cgF1 = 100 * pmF1 * IL_MCC, as the SAM 3 paper defines them.

- Only predictions with score >= 0.5 count.
- Per image-NP pair, predictions and ground-truth instances are matched one-to-one by the Hungarian
  algorithm maximising total mask IoU; a matched pair is a true positive at threshold tau if IoU >= tau.
- pmF1 (positive micro F1): over POSITIVE pairs only (>= 1 ground-truth instance), TP/FP/FN are summed over
  pairs and F1 = 2TP / (2TP + FP + FN) at each tau in 0.50:0.05:0.95; pmF1 is the mean over the ten taus.
- IL_MCC: over ALL pairs, the Matthews correlation of "the model predicts anything" vs "the pair has ground
  truth": it is what punishes false positives on negative NPs, which pmF1 cannot see.

Degenerate cases (chosen so that a metric is never NaN): F1 at a tau whose 2TP+FP+FN is 0 is 0; pmF1 is 0
when there is no positive pair; IL_MCC is 0 when its denominator is 0 (all pairs positive, all negative, all
predicted or none predicted), the convention of sklearn's matthews_corrcoef.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from conceptengine.engine import rle

TAUS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
SCORE_THRESHOLD = 0.5


@dataclass
class PairGT:
    """Ground truth of one image-NP pair. An empty `masks` list is a negative pair."""

    key: str
    height: int
    width: int
    masks: list[str] = field(default_factory=list)  # COCO compressed RLE counts
    concept: str | None = None  # the NP, for per-concept breakdowns


@dataclass
class PairPred:
    key: str
    height: int
    width: int
    masks: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


@dataclass
class Metrics:
    cgF1: float
    IL_MCC: float
    pmF1: float
    f1_at: dict[float, float]  # tau -> micro F1 over positive pairs
    counts: dict[str, int]  # pairs, positive/negative pairs, IL confusion, TP/FP/FN at 0.5

    def as_dict(self) -> dict:
        return {
            "cgF1": self.cgF1,
            "IL_MCC": self.IL_MCC,
            "pmF1": self.pmF1,
            "f1_at": {f"{t:.2f}": v for t, v in self.f1_at.items()},
            "counts": dict(self.counts),
        }


def hungarian_pairs(iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, ground-truth) indices of the one-to-one assignment maximising total IoU."""
    if iou.size == 0:
        return np.zeros(0, int), np.zeros(0, int)
    return linear_sum_assignment(iou, maximize=True)


def hungarian_ious(iou: np.ndarray) -> np.ndarray:
    """IoUs of the one-to-one assignment maximising total IoU (length min(n_pred, n_gt))."""
    rows, cols = hungarian_pairs(iou)
    return iou[rows, cols]


def mcc(tp: int, fp: int, fn: int, tn: int) -> float:
    denom = math.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else (tp * tn - fp * fn) / denom


def saco_metrics(gold: list[PairGT], pred: list[PairPred]) -> Metrics:
    """Score predictions against gold pairs. Predictions for keys not in `gold` are ignored (and counted)."""
    gold_by_key: dict[str, PairGT] = {}
    for g in gold:
        if g.key in gold_by_key:
            raise ValueError(f"gold pair {g.key!r} appears twice")
        gold_by_key[g.key] = g
    kept: dict[str, list[str]] = defaultdict(list)
    ignored = 0
    for p in pred:
        if len(p.masks) != len(p.scores):
            raise ValueError(f"prediction {p.key!r} has {len(p.masks)} masks but {len(p.scores)} scores")
        g = gold_by_key.get(p.key)
        if g is None:
            ignored += 1
            continue
        if (p.height, p.width) != (g.height, g.width):
            raise ValueError(f"prediction {p.key!r} is {p.height}x{p.width} but gold is {g.height}x{g.width}")
        kept[p.key].extend(m for m, s in zip(p.masks, p.scores) if s >= SCORE_THRESHOLD)

    tp = dict.fromkeys(TAUS, 0)
    fp = dict.fromkeys(TAUS, 0)
    fn = dict.fromkeys(TAUS, 0)
    il = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    n_pos = 0
    for g in gold:
        p_masks = kept.get(g.key, [])
        has_gt, has_pred = bool(g.masks), bool(p_masks)
        il[("t" if has_gt == has_pred else "f") + ("p" if has_pred else "n")] += 1
        if not has_gt:
            continue
        n_pos += 1
        matched = hungarian_ious(rle.iou_matrix(p_masks, g.masks, g.height, g.width))
        for tau in TAUS:
            t = int(np.sum(matched >= tau - 1e-9))
            tp[tau] += t
            fp[tau] += len(p_masks) - t
            fn[tau] += len(g.masks) - t

    f1_at = {}
    for tau in TAUS:
        denom = 2 * tp[tau] + fp[tau] + fn[tau]
        f1_at[tau] = 0.0 if denom == 0 else 2 * tp[tau] / denom
    pm_f1 = float(np.mean(list(f1_at.values()))) if n_pos else 0.0
    il_mcc = mcc(il["tp"], il["fp"], il["fn"], il["tn"])
    counts = {
        "pairs": len(gold),
        "positive_pairs": n_pos,
        "negative_pairs": len(gold) - n_pos,
        "il_tp": il["tp"],
        "il_fp": il["fp"],
        "il_fn": il["fn"],
        "il_tn": il["tn"],
        "tp@0.50": tp[0.5],
        "fp@0.50": fp[0.5],
        "fn@0.50": fn[0.5],
        "ignored_pred_pairs": ignored,
    }
    return Metrics(cgF1=100.0 * pm_f1 * il_mcc, IL_MCC=il_mcc, pmF1=pm_f1, f1_at=f1_at, counts=counts)


def saco_metrics_by_concept(gold: list[PairGT], pred: list[PairPred]) -> dict[str, Metrics]:
    """Metrics restricted to each concept's pairs (PairGT.concept; pairs without one go under '')."""
    groups: dict[str, list[PairGT]] = defaultdict(list)
    for g in gold:
        groups[g.concept or ""].append(g)
    out = {}
    for concept, gs in sorted(groups.items()):
        keys = {g.key for g in gs}
        out[concept] = saco_metrics(gs, [p for p in pred if p.key in keys])
    return out
