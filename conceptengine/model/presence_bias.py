"""Fit a checkpoint's operating point: a constant added to the presence logit, chosen on a held-out split.

A SAM 3 detection scores sigmoid(query logit) * sigmoid(presence logit) and counts when that is >= 0.5, so
a model whose two heads are each only fairly sure (0.65 and 0.7) drops masks it already has right. The
presence head ends in a linear layer whose bias shifts every presence logit alike; trying a few shifts on a
split the model was not trained on, and keeping the one with the best cgF1, is Platt-style calibration
that lives in the checkpoint's own weights (nothing changes at inference). Fit on a split other than the
gold the checkpoint is reported on, or the gold score is no longer a measurement.
"""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
import torch
from transformers import Sam3Model

from conceptengine.model.evaluate import gold_images, pair_prediction, pair_truth
from conceptengine.model.metrics import SCORE_THRESHOLD, PairGT, PairPred, saco_metrics
from conceptengine.model.sam3_backend import Sam3Detector

DEFAULT_OFFSETS: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)


def presence_logit_bias(model: Sam3Model) -> torch.nn.Parameter:
    """The bias of the presence head's last linear layer: adding c to it adds c to every presence logit."""
    head = model.detr_decoder.presence_head
    return (head.layer3 if head.layer3 is not None else head.layer2).bias


def fit_presence_bias(
    detector: Sam3Detector, table: pa.Table, offsets: tuple[float, ...] = DEFAULT_OFFSETS
) -> dict:
    """Score `detector` on `table` (ANNOTATIONS rows) with each offset added to the presence logit, keep the
    best in the model (ties go to the smallest shift), and return {"offset", "cgF1": {offset: score}}.

    The shift moves only the presence score, so each image goes through the detector once and every offset
    is applied to the same raw outputs: the fit costs one evaluation, not one per offset.
    """
    if not offsets:
        raise ValueError("fit_presence_bias: offsets is empty; give at least one shift, e.g. (0.0,)")
    gts: list[PairGT] = []
    preds: dict[float, list[PairPred]] = {float(o): [] for o in offsets}
    for image, group in gold_images(table):
        h, w = image.shape[:2]
        raw = detector.forward_nps(image, [r["noun_phrase"] for r in group])
        gts += [pair_truth(r, image) for r in group]
        for offset, out in preds.items():
            shifted = replace(raw, presence_logits=raw.presence_logits + offset)
            dets = detector.postprocess(shifted, h, w, SCORE_THRESHOLD)
            out += [pair_prediction(r, d) for r, d in zip(group, dets, strict=True)]
    scores = {offset: saco_metrics(gts, out).cgF1 for offset, out in preds.items()}
    best = max(scores, key=lambda o: (round(scores[o], 6), -abs(o)))
    bias = presence_logit_bias(detector.model)
    with torch.no_grad():
        bias.add_(best)
    return {"offset": best, "cgF1": {str(o): s for o, s in scores.items()}}
