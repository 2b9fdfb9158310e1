"""Fine-tune a grounded scorer on human verdicts: the verifier-retrain path for grounded checkpoints.

Verdicts (train_data.EXAMPLES rows, as `examples_from_run` joins them) carry what the reviewer saw and
answered, not the objects' slot values nor where a missed object sits, so fine-tuning trains the verdict
alone; the tower keeps what its first training taught it. The candidate and its base are scored on the
same held-out images (train_data.split_examples), so the retrain step promotes only a candidate that
agrees better with the humans.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from pydantic import BaseModel, ConfigDict, Field

from conceptengine.engine.checkpoints import local_checkpoint
from conceptengine.engine.media import load_rgb
from conceptengine.training.loop import reproducible_on
from conceptengine.training.verifier import TrainVerifierConfig
from conceptengine.verifiers.grounded import ev_train, region_ev, train
from conceptengine.verifiers.grounded.backend import grounded_task, load_scorer
from conceptengine.verifiers.grounded.ev_model import GroundedEVModel
from conceptengine.verifiers.grounded.model import GroundedMVModel
from conceptengine.verifiers.grounded.phrases import PhraseEmbedder
from conceptengine.verifiers.grounded.region_ev import RegionEVModel
from conceptengine.verifiers.train_data import TASKS, split_examples
from conceptengine.verifiers.train_metrics import agreement_metrics

METRICS_FILE = "metrics.json"
# Items per forward when scoring the hold-out: on 2 CPU cores the EV scorer takes 30 ms an item at 16 and
# 45 ms at 128 (its activations then outgrow the caches).
INFER_BATCH = 16


class GroundedFinetuneConfig(BaseModel):
    """`verifier_retrain.train` for a grounded checkpoint (an MLLM's LoRA settings do not apply)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(200, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(5e-4, gt=0)
    holdout_share: float = Field(0.2, ge=0, lt=1)
    split_seed: int = 0

    @classmethod
    def from_train(cls, train: dict[str, Any]) -> GroundedFinetuneConfig:
        """From the retrain step's `train` settings: the shared ones are used, an MLLM trainer's own (LoRA,
        view size, Ray workers ...) do not apply and are skipped, anything else is refused."""

        mllm_only = set(TrainVerifierConfig.model_fields) - set(cls.model_fields)
        return cls.model_validate({k: v for k, v in train.items() if k not in mllm_only})


Scorer = GroundedMVModel | GroundedEVModel | RegionEVModel


def _data(model: Scorer, table: pa.Table) -> train.MVData | ev_train.EVData:
    rows = table.to_pylist()
    images: dict[str, np.ndarray] = {}

    def read(uri: str) -> np.ndarray:
        if uri not in images:
            images.clear()  # rows of one image come together: keep one decoded
            images[uri] = load_rgb(uri)
        return images[uri]

    c = model.config
    if isinstance(model, GroundedMVModel):
        return train.prepare(rows, read, c.slots, None, c.crop_size)
    return ev_train.prepare(rows, read, c.slots, [None] * len(rows), c.image_size, c.grid)


def _loss(model: Scorer):  # type: ignore[no-untyped-def]
    if isinstance(model, GroundedMVModel):
        return train.loss_on
    return region_ev.loss_on if isinstance(model, RegionEVModel) else ev_train.loss_on


@torch.no_grad()
def choice_probs(model, data, embedder: PhraseEmbedder) -> np.ndarray:  # type: ignore[no-untyped-def]
    """(N, n_choices) probabilities, Accept first, for MV or EV data."""
    model.eval()
    embeds = embedder(data.phrases)
    out = []
    for i in range(0, len(data), INFER_BATCH):
        idx = torch.arange(i, min(i + INFER_BATCH, len(data)))
        pixels = data.pixels[idx] if isinstance(data, train.MVData) else ev_train.pixels_of(data, idx)
        out.append(model.choice_probs(pixels, embeds[idx]).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.config.choices)), dtype=np.float32)


def finetune(
    base: str, table: pa.Table, out_dir: str, cfg: GroundedFinetuneConfig, seed: int = 0
) -> tuple[dict, dict]:
    """Train a copy of the scorer at `base` on `table`'s training images, save it to `out_dir`; returns the
    hold-out agreement metrics of (candidate, base)."""
    reproducible_on(torch.device("cpu"))  # the grounded scorers train on CPU
    local = local_checkpoint(base)  # a remote run's earlier candidate: its local mirror
    model, task = load_scorer(local), grounded_task(local)
    table = table.filter(pc.equal(table["task"], task)).sort_by("uri")  # each image decoded once
    fit_on, holdout = split_examples(table, cfg.holdout_share, cfg.split_seed)
    if fit_on.num_rows == 0:
        raise ValueError(
            f"verifier retrain: all {table.num_rows} {task} verdicts fell into the hold-out images; "
            "lower holdout_share or wait for verdicts on more images"
        )
    embedder = PhraseEmbedder(model.config.text_model)
    held = _data(model, holdout) if holdout.num_rows else None
    choices = TASKS[task]

    def metrics() -> dict:
        if held is None:
            return agreement_metrics(np.zeros((0, len(choices))), [], choices)
        return agreement_metrics(choice_probs(model, held, embedder), holdout["choice"].to_pylist(), choices)

    base_metrics = metrics()
    data = _data(model, fit_on)
    loss = _loss(model)
    embeds = embedder(data.phrases)
    batch = min(cfg.batch_size, len(data))
    train.fit(model, len(data), lambda idx: loss(model, data, idx, embeds), cfg.steps, batch, cfg.lr, seed)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    candidate = metrics()
    summary = {
        "task": task,
        "base": base,
        "examples": table.num_rows,
        "holdout": candidate,
        "base_holdout": base_metrics,
    }
    (Path(out_dir) / METRICS_FILE).write_text(json.dumps(summary, indent=2))
    return candidate, base_metrics
