"""Stage 1 of a SAM 3 trained from scratch: pre-train the vision and text towers before any detection.

SAM 3's detector sits on a Perception Encoder whose towers were pre-trained contrastively on image-text
pairs before detection training. This is the same idea at toy scale, on labelled regions (an instance mask
plus its attributes and the phrases that name it), with two losses that can be switched separately:
- `classify`: the vision backbone's grid is mask-pooled per region and linear heads classify each
  attribute (e.g. leaf concept, colour, pattern); a direct, dense signal that teaches the backbone shapes.
- `contrastive`: mask-pooled region embeddings and mean-pooled text embeddings are aligned with a
  sigmoid (SigLIP-style) loss over every region x phrase of the batch; a phrase is a positive of every
  region it names, so hierarchy words ("polygon") and modifiers ("red square") need no special casing.
Regions are seen in one of two views (`view`):
- `crops`: each region cut out and scaled to fill a small input; the fastest way for a CNN to learn
  outlines from scratch, but at an object scale the detector never sees;
- `scenes`: whole images at the detector's resolution, each region's tokens pooled under its mask; what
  a DETR query pools. A backbone taught on crops keeps little of the shape at that scale (a linear probe of
  such pooled tokens: 15% leaf accuracy where its crops give 34%; 31% after 10,000 steps on scenes, 42%
  after 20,000), so scenes follow crops.
The heads are thrown away; the output is a full `Sam3Model` checkpoint (the detector untouched) that
stage 2 (`training/sam3.py`) starts from. Resumable like every trainer here (training/loop.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from transformers import Sam3Model

from conceptengine.engine import rle
from conceptengine.engine.ids import stable_seed
from conceptengine.engine.media import load_rgb
from conceptengine.model.processing import load_sam3_inputs
from conceptengine.training import loop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Region:
    rle: str  # COCO RLE counts at the image's size
    labels: dict[str, str]  # attribute -> value, e.g. {"leaf": "square", "colour": "red"}
    phrases: tuple[str, ...]  # every noun phrase that names this region (for the contrastive loss)


@dataclass(frozen=True)
class RegionImage:
    uri: str
    height: int
    width: int
    regions: tuple[Region, ...]


class PretrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    init_checkpoint: str
    output_dir: str
    steps: int = Field(1000, ge=0)
    batch_size: int = Field(16, ge=1)  # images per step; every labelled region of each is one example
    view: Literal["crops", "scenes"] = "crops"
    crop_size: int = Field(64, ge=16)  # side of a crop (convolutional backbones; a ViT takes its image size)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    classify: bool = True
    contrastive: bool = True
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    use_gpu: bool = False  # what "auto" resolves by, as in the other trainers

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return loop.check_device(v)

    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(20, ge=1)


class _Heads(nn.Module):
    """Per-attribute classifiers and the two contrastive projections; not part of the saved checkpoint.

    On crops a classifier sees the pooled feature and the crop's grid of features flattened (`cells`): an
    average alone keeps colour and texture but loses the layout that tells a square from a circle. On scenes
    it sees the mask-pooled feature alone (`cells` 0), so the shape has to be in the tokens themselves."""

    def __init__(self, dim: int, cells: int, classes: dict[str, list[str]]):
        super().__init__()
        self.classes = classes
        self.cls = nn.ModuleDict({a: nn.Linear(dim * (1 + cells), len(v)) for a, v in classes.items()})
        self.region_proj = nn.Linear(dim, dim)
        self.text_proj = nn.Linear(dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(np.log(10.0), dtype=torch.float32))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))  # SigLIP's init: most pairs are negatives


def attribute_classes(images: Sequence[RegionImage]) -> dict[str, list[str]]:
    values: dict[str, set[str]] = {}
    for im in images:
        for r in im.regions:
            for k, v in r.labels.items():
                values.setdefault(k, set()).add(v)
    return {k: sorted(v) for k, v in sorted(values.items())}


@dataclass(frozen=True)
class _Batch:
    """One step's examples. `pixels` (N, 3, H, W): one crop per region, or one whole image per picked image.
    `pool` (R, N * cells), scenes only: each region's weights over the batch's tokens (rows sum to 1)."""

    pixels: torch.Tensor
    pool: torch.Tensor | None
    regions: list[Region]

    def to(self, device) -> _Batch:
        pool = None if self.pool is None else self.pool.to(device)
        return _Batch(self.pixels.to(device), pool, self.regions)


class _Loader:
    """The images with labelled regions, drawn `batch_size` at a time. Batch k of a run is a pure function of
    (seed, k): resuming repeats the uninterrupted sequence."""

    def __init__(self, images: Sequence[RegionImage], inputs, batch_size: int, seed: int):
        self.images = [im for im in images if im.regions]
        if not self.images:
            raise ValueError("pretrain: no image has a labelled region")
        self.inputs, self.bs, self.seed = inputs, batch_size, seed

    def draw(self, step: int) -> tuple[np.random.Generator, list[RegionImage]]:
        rng = np.random.default_rng(stable_seed(self.seed, "pretrain", str(step)))
        picks = rng.choice(len(self.images), size=min(self.bs, len(self.images)), replace=False)
        return rng, [self.images[int(i)] for i in picks]

    @staticmethod
    def load(im: RegionImage, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        """The image, mirrored left-right for half the draws."""
        img = load_rgb(im.uri)
        flip = bool(rng.random() < 0.5)
        return (np.ascontiguousarray(img[:, ::-1]) if flip else img), flip


class _CropLoader(_Loader):
    """Crops of regions, the object filling most of the crop (random scale and shift), at `crop_size`.

    A small CNN learns outlines several times faster when the object fills its input, and a crop costs a
    fraction of a whole image.
    """

    def __init__(self, images: Sequence[RegionImage], inputs, crop_size: int, batch_size: int, seed: int):
        super().__init__(images, inputs, batch_size, seed)
        self.crop = crop_size

    def batch(self, step: int) -> _Batch:
        rng, picked = self.draw(step)
        thetas, owners, regions, pixels = [], [], [], []
        for b, im in enumerate(picked):
            img, flip = self.load(im, rng)
            pixels.append(self.inputs.pixels(img)[0])
            for r in im.regions:
                dense = rle.decode(r.rle, im.height, im.width)
                ys, xs = np.nonzero(dense[:, ::-1] if flip else dense)
                if not len(xs):
                    continue
                cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
                side = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) * rng.uniform(1.1, 1.5)
                cx, cy = cx + rng.uniform(-0.1, 0.1) * side, cy + rng.uniform(-0.1, 0.1) * side
                # affine_grid maps the crop's [-1, 1] square onto this box of the image's [-1, 1] frame
                thetas.append(
                    [
                        [side / im.width, 0.0, 2 * cx / im.width - 1],
                        [0.0, side / im.height, 2 * cy / im.height - 1],
                    ]
                )
                owners.append(b)
                regions.append(r)
        theta = torch.tensor(thetas, dtype=torch.float32)
        grid = F.affine_grid(theta, [len(thetas), 3, self.crop, self.crop], align_corners=False)
        crops = F.grid_sample(torch.stack(pixels)[owners], grid, align_corners=False)  # outside: 0 (grey)
        return _Batch(crops, None, regions)


class _SceneLoader(_Loader):
    """Whole images at the model's input size; each region pools the tokens its mask covers (area-weighted
    over the backbone's grid, one cell per `stride` pixels of the input). Regions covering under a third of
    a cell are left out: their pooled token is mostly their neighbours'."""

    def __init__(self, images: Sequence[RegionImage], inputs, stride: int, batch_size: int, seed: int):
        super().__init__(images, inputs, batch_size, seed)
        self.stride = stride

    def batch(self, step: int) -> _Batch:
        rng, picked = self.draw(step)
        pixels, rows, regions, cells = [], [], [], 0
        for b, im in enumerate(picked):
            img, flip = self.load(im, rng)
            pixels.append(self.inputs.pixels(img)[0])
            grid = (pixels[-1].shape[-2] // self.stride, pixels[-1].shape[-1] // self.stride)
            cells = grid[0] * grid[1]
            for r in im.regions:
                dense = rle.decode(r.rle, im.height, im.width)
                mask = torch.from_numpy(np.ascontiguousarray(dense[:, ::-1] if flip else dense)).float()
                cover = F.adaptive_avg_pool2d(mask[None, None], grid).flatten()
                if cover.sum() < 1 / 3:
                    continue
                rows.append((b, cover / cover.sum()))
                regions.append(r)
        pool = torch.zeros(len(rows), len(picked) * cells)  # every image is resized to the same input size
        for k, (b, weights) in enumerate(rows):
            pool[k, b * cells : (b + 1) * cells] = weights
        return _Batch(torch.stack(pixels), pool, regions)


def _losses(
    model: Sam3Model, heads: _Heads, batch: _Batch, inputs, cfg: PretrainConfig, rng
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The loss terms, and accuracies of this batch for the learning curve (before the step)."""
    regions, device = batch.regions, batch.pixels.device
    tokens = model.vision_encoder.backbone(batch.pixels).last_hidden_state  # (N, cells, C)
    if batch.pool is None:  # crops: one region each
        pooled = tokens.mean(1)
        region_feats = torch.cat([pooled, tokens.flatten(1)], dim=1)
    else:
        pooled = batch.pool @ tokens.flatten(0, 1)
        region_feats = pooled
    out: dict[str, torch.Tensor] = {}
    acc: dict[str, float] = {}
    if cfg.classify:
        for attr, head in heads.cls.items():
            idx = [k for k, r in enumerate(regions) if attr in r.labels]
            if idx:
                target = torch.tensor(
                    [heads.classes[attr].index(regions[k].labels[attr]) for k in idx], device=device
                )
                logits = head(region_feats[idx])
                out[f"cls_{attr}"] = F.cross_entropy(logits, target)
                acc[f"acc_{attr}"] = float((logits.argmax(-1) == target).float().mean())
    if cfg.contrastive:
        named = [k for k, r in enumerate(regions) if r.phrases]
        if named:
            # One sampled phrase per region, deduplicated; each phrase is a positive of every region it names.
            texts = sorted({regions[k].phrases[int(rng.integers(len(regions[k].phrases)))] for k in named})
            tok = {k: v.to(device) for k, v in inputs.tokens(texts).items()}
            text_tokens = model.get_text_features(**tok).pooler_output  # (P, T, C)
            mask = tok["attention_mask"].unsqueeze(-1).to(text_tokens.dtype)
            text = F.normalize(heads.text_proj((text_tokens * mask).sum(1) / mask.sum(1)), dim=-1)
            reg = F.normalize(heads.region_proj(pooled[named]), dim=-1)
            logits = reg @ text.T * heads.logit_scale.exp() + heads.logit_bias
            target = torch.tensor(
                [[1.0 if t in regions[k].phrases else 0.0 for t in texts] for k in named], device=device
            )
            out["contrastive"] = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / len(
                named
            )
            # Retrieval: does a region's best-scoring phrase of the batch name it?
            acc["acc_text"] = float(target.gather(1, logits.argmax(1, keepdim=True)).mean())
    out["loss"] = sum(out.values())
    return out, acc


def pretrain_towers(cfg: PretrainConfig, images: Sequence[RegionImage]) -> str:
    """Train the vision backbone and text encoder of `cfg.init_checkpoint`; returns `cfg.output_dir`."""
    if not (cfg.classify or cfg.contrastive):
        raise ValueError("pretrain: enable classify, contrastive or both")
    loop.require_init_checkpoint(cfg.init_checkpoint, "SAM 3")
    torch.manual_seed(cfg.seed)
    device = loop.resolve_device(cfg)
    loop.reproducible_on(device)
    model = Sam3Model.from_pretrained(cfg.init_checkpoint).to(device)
    model.train()
    inputs = load_sam3_inputs(cfg.init_checkpoint)
    backbone_cfg = model.config.vision_config.backbone_config
    patch = int(backbone_cfg.patch_size)
    # A ViT's position embeddings fix its input size; a CNN takes crops of any multiple of its stride.
    crop = (
        cfg.crop_size
        if backbone_cfg.model_type == "conceptengine_conv_backbone"
        else int(backbone_cfg.image_size)
    )
    if crop % patch:
        raise ValueError(f"pretrain: crop_size {crop} is not a multiple of the backbone's stride {patch}")
    if cfg.view == "scenes":
        loader = _SceneLoader(images, inputs, patch, cfg.batch_size, cfg.seed)
        layout_cells = 0
    else:
        loader = _CropLoader(images, inputs, crop, cfg.batch_size, cfg.seed)
        layout_cells = (crop // patch) ** 2
    heads = _Heads(int(backbone_cfg.hidden_size), layout_cells, attribute_classes(images)).to(device)
    if cfg.contrastive and heads.text_proj.in_features != model.text_projection.out_features:
        raise ValueError("pretrain: the text projection and the backbone must have the same width")
    trained = [*model.vision_encoder.backbone.parameters(), *model.text_encoder.parameters(),
               *model.text_projection.parameters(), *heads.parameters()]  # fmt: skip
    optimizer = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, loop.warmup_cosine(cfg.steps, cfg.warmup_steps, 0.1)
    )

    def load(state: dict, _: Path) -> None:
        model.load_state_dict(state["model"])
        heads.load_state_dict(state["heads"])

    start = loop.resume(cfg.output_dir, device, optimizer, scheduler, load)
    train_log = loop.TrainLog(cfg.output_dir, cfg.steps, cfg.log_every, 0, None)
    for step in range(start, cfg.steps):
        rng = np.random.default_rng(stable_seed(cfg.seed, "pretrain-text", str(step)))
        terms, acc = _losses(model, heads, loader.batch(step).to(device), inputs, cfg, rng)
        loop.optimizer_step(terms["loss"], model, trained, optimizer, 1.0, 1)
        scheduler.step()
        metrics = {**{k: float(v.detach()) for k, v in terms.items()}, **acc}
        rec = train_log.after_step(step + 1, scheduler.get_last_lr()[0], metrics)
        if rec is not None:
            log.info("pretrain step %d %s", step + 1, {k: round(v, 3) for k, v in rec.items() if k != "step"})
        if loop.due(step + 1, cfg.checkpoint_every, cfg.steps):
            loop.save_checkpoint(
                cfg.output_dir, step + 1, {"model": model.state_dict(), "heads": heads.state_dict()},
                optimizer, scheduler, 2,
            )  # fmt: skip
    out = Path(cfg.output_dir)
    model.save_pretrained(out)
    loop.finish_output(
        out, cfg.init_checkpoint, {"stage": "pretrain", "steps": cfg.steps, "resumed_from": start,
                                   "config": cfg.model_dump(mode="json")},
        lambda name: name in ("config.json", "model.safetensors"),
    )  # fmt: skip
    return str(out)
