"""The peak-and-judge EV scorer: find the objects nobody boxed, then judge each crop as MV judges a crop.

The demo now ships the region EV (region_ev.py), which keeps this scorer's detector, centre, offset and
foreground layers as its finder and judges what they segment with the MV scorer instead of this judge.

EV asks whether every instance of the phrase has its box. A whole-image classifier that must answer that
from one pooled vector does not learn it on CPU (issue 12: swap 0.01), and a dense grid that must also tell
thirty leaf shapes apart from stride-8 features learns it slowly (AUC 0.60 after 150 steps on the demo
world). So the question is split where each half is easy:

1. a detector over the whole image at `image_size`, the proposed boxes filled in as a fourth channel, says
   per grid cell whether an object nobody boxed is centred there (`missed`) and how big it is (`side`);
2. the `candidates` likeliest cells (local peaks first, so one object does not fill the list) are cropped
   from the image, centred and scaled as the MV scorer's zoomed-in crops are (crops.py), and a judge tower
   says per slot of the ontology which value each object has; the phrase says which values it accepts, as
   in the MV scorer (model.py).

With `silhouette`, a dense head also says per pixel (at stride 2) whether it belongs to an object, and the
judge's crops carry that map as a fourth channel, as the MV scorer's carry the mask. Leaf shapes are what the
judge learns slowest; after 280 batches of 256 jittered crops of the demo's training world it told them
apart at 17% from RGB alone, 36% with the true foreground beside it, and 21% reading the head's prediction
after 150 batches of its own (IoU 0.86; the judge had trained on the true one), so the foreground is trained
first and the judge then learns on its prediction (ev_train.train_foreground, predicted_foreground).

With `centre_offsets`, a head also says where in its cell an object's centre lies (CenterNet's offset), so a
candidate's crop is centred on its object rather than anywhere in the 8 px cell, and the judge trains on
crops jittered by a quarter of a cell instead of a whole one.

A candidate is a missed instance of the phrase with P = sigmoid(missed) * prod over slots of P(an accepted
value), and log P(Accept) = sum over the candidates of log(1 - P). A box of another object covers no instance
of the phrase and changes nothing here: MV rejects it, and routing lets EV decide a pair on its own only when
no box was proposed (routing.ev_scope).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from conceptengine.verifiers.choices import EV
from conceptengine.verifiers.grounded.crops import CROP_SCALE, CROP_SIZE, MIN_SIDE
from conceptengine.verifiers.grounded.model import conv_block, log_slot_match
from conceptengine.verifiers.grounded.phrases import MINILM

EV_IMAGE_SIZE = 192
NOT_A_PEAK = 1e4  # logit penalty that ranks a cell below every local peak of the missed-object map


class GroundedEVConfig(PretrainedConfig):
    model_type = "conceptengine_grounded_ev"

    def __init__(
        self,
        slots: list[list] | None = None,
        detector_channels: list[int] | None = None,
        context_layers: int = 2,
        judge_channels: list[int] | None = None,
        candidates: int = 8,
        silhouette: bool = False,
        centre_offsets: bool = False,
        text_dim: int = 384,
        text_model: str = MINILM,
        image_size: int = EV_IMAGE_SIZE,
        crop_size: int = CROP_SIZE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.slots = [[str(name), [str(v) for v in values]] for name, values in (slots or [])]
        self.detector_channels = list(detector_channels or [16, 32, 64])
        self.context_layers = context_layers  # 3x3 convs at the grid's resolution: a cell sees its object
        self.judge_channels = list(judge_channels or [24, 48, 96, 128])
        self.candidates = candidates  # cells cropped and judged per image
        self.silhouette = silhouette  # the judge also sees the predicted foreground of its crop
        self.centre_offsets = centre_offsets  # candidates are centred where the object is within its cell
        self.text_dim = text_dim
        self.text_model = text_model
        self.image_size = image_size
        self.crop_size = crop_size
        self.choices = list(EV.names)

    @property
    def stride(self) -> int:
        return 2 ** len(self.detector_channels)

    @property
    def grid(self) -> int:
        return self.image_size // self.stride

    @property
    def centre_jitter(self) -> float:
        """How far, in cells, a candidate's centre may be off its object's: what the judge trains with."""
        return 0.25 if self.centre_offsets else 1.0


@dataclass
class GroundedEVOutput(ModelOutput):
    accept_logits: torch.Tensor | None = None  # (B,)
    other_logits: torch.Tensor | None = None  # (B, len(EV) - 1)
    missed_logits: torch.Tensor | None = None  # (B, G, G): an unboxed object is centred in the cell
    side_logits: torch.Tensor | None = None  # (B, G, G): log(side / image_size) of the object centred there
    # (B, 2, G, G): logits of where (x, y) in the cell that object's centre lies (configs with `centre_offsets`)
    offset_logits: torch.Tensor | None = None
    # (B, S/2, S/2) a pixel belongs to an object, boxed or not (configs with `silhouette` only)
    foreground_logits: torch.Tensor | None = None


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (Mächler, 2012)."""
    x = x.clamp_max(-1e-7)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def neighbourhood_max(grid: torch.Tensor) -> torch.Tensor:
    """(B, G, G): each cell's maximum over its 3x3 neighbourhood."""
    return F.max_pool2d(grid[:, None], 3, stride=1, padding=1)[:, 0]


def candidate_cells(missed: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k) flat indices of the likeliest unboxed objects in (B, G, G) `missed` logits, one cell each:
    a cell that is not the peak of its 3x3 neighbourhood (the same object seen from the next cell) comes
    last."""
    peak = missed >= neighbourhood_max(missed)
    return (missed - NOT_A_PEAK * (~peak).to(missed.dtype)).flatten(1).topk(k, dim=1).indices


def crop_objects(
    images: torch.Tensor, which: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor, size: int
) -> torch.Tensor:
    """(N, C, size, size) crops of `images[which]` (B, C, S, S), square, centred at `centres` (N, 2; x, y in
    pixels) and CROP_SCALE times `sides` (N; pixels) wide, as crops.object_crop frames an object; zeros
    outside the image. Differentiable in the image and the sides."""
    s = images.shape[-1]
    half = (sides * CROP_SCALE).clamp_min(MIN_SIDE) / s  # half-width in [-1, 1] units: (side / S) * 2 / 2
    theta = torch.zeros((len(which), 2, 3), dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = half
    theta[:, 1, 1] = half
    theta[:, :, 2] = centres / s * 2 - 1
    grid = F.affine_grid(theta, [len(which), images.shape[1], size, size], align_corners=False)
    # One grid_sample per image, its crops' grids stacked along the height: `images[which]` would copy the
    # whole image once per crop (11% of an EV forward at 8 candidates). Each output pixel is the same sum.
    order = torch.argsort(which, stable=True)
    images_of, counts = torch.unique_consecutive(which[order], return_counts=True)
    parts = []
    for b, idx in zip(images_of.tolist(), order.split(counts.tolist()), strict=True):
        rows = grid[idx].reshape(1, len(idx) * size, size, 2)
        sampled = F.grid_sample(images[b : b + 1], rows, align_corners=False)
        parts.append(sampled.view(images.shape[1], len(idx), size, size).transpose(0, 1))
    return torch.cat(parts)[torch.argsort(order)]


class ForegroundHead(nn.Module):
    """(B, S/2, S/2) logits that a pixel belongs to an object, from the detector's first block (stride 2:
    edges) and its grid features (which cells hold objects), squeezed before they are upsampled so the
    full-resolution convolution stays cheap."""

    def __init__(self, first: int, grid: int, width: int = 16):
        super().__init__()
        self.squeeze = nn.Conv2d(grid, width, 1)
        self.head = nn.Sequential(
            nn.Conv2d(first + width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 1)
        )

    def forward(self, first: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.squeeze(grid), size=first.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([first, up], dim=1))[:, 0]


def detector_layers(channels: list[int], context_layers: int) -> nn.Sequential:
    """The detector over the image and its box channel: conv blocks down to the grid, then `context_layers`
    3x3 convs at the grid's resolution so that a cell sees its whole object."""
    det = channels[-1]
    context = [
        nn.Sequential(nn.Conv2d(det, det, 3, padding=1, bias=False), nn.BatchNorm2d(det), nn.ReLU())
        for _ in range(context_layers)
    ]
    return nn.Sequential(*(conv_block(a, b) for a, b in pairwise([4, *channels])), *context)


def detector_features(
    detector: nn.Sequential, pixel_values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grid features, the first block's output): what the heads and the foreground head read."""
    x, first = pixel_values, pixel_values
    for i, layer in enumerate(detector):
        x = layer(x)
        if i == 0:
            first = x
    return x, first


class GroundedEVModel(PreTrainedModel):
    config_class = GroundedEVConfig
    main_input_name = "pixel_values"

    def __init__(self, config: GroundedEVConfig):
        super().__init__(config)
        det = config.detector_channels[-1]
        self.detector = detector_layers(config.detector_channels, config.context_layers)
        self.missed = nn.Conv2d(det, 1, 1)
        self.side = nn.Conv2d(det, 1, 1)
        self.offset = nn.Conv2d(det, 2, 1) if config.centre_offsets else None
        self.foreground = ForegroundHead(config.detector_channels[0], det) if config.silhouette else None
        judge = [4 if config.silhouette else 3, *config.judge_channels]
        self.judge = nn.Sequential(
            *(conv_block(a, b) for a, b in pairwise(judge)), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.slot_names = [name for name, _ in config.slots]
        self.slot_sizes = [len(values) for _, values in config.slots]
        feat = config.judge_channels[-1]
        self.values = nn.Linear(feat, sum(self.slot_sizes)) if self.slot_sizes else None
        self.needs = nn.Linear(config.text_dim, sum(self.slot_sizes)) if self.slot_sizes else None
        self.others = nn.Linear(det + config.text_dim, len(config.choices) - 1)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        pass  # torch's own initialisation of each layer

    def judge_values(self, crops: torch.Tensor) -> list[torch.Tensor]:
        """Per slot, (N, n_values) logits of which value each cropped object has."""
        if self.values is None:
            return []
        return list(self.values(self.judge(crops)).split(self.slot_sizes, dim=-1))

    def detect(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, D, G, G) grid features and, with `silhouette`, (B, S/2, S/2) foreground logits."""
        x, first = detector_features(self.detector, pixel_values)
        return x, None if self.foreground is None else self.foreground(first, x)

    def judge_input(self, rgb: torch.Tensor, foreground_logits: torch.Tensor | None) -> torch.Tensor:
        """What the judge crops from: RGB, and with `silhouette` the foreground's probability at the image's
        size. Detached: the foreground learns from its own dense targets only."""
        if self.foreground is None:
            return rgb
        fg = torch.sigmoid(foreground_logits.detach())[:, None]
        return torch.cat(
            [rgb, F.interpolate(fg, size=rgb.shape[-2:], mode="bilinear", align_corners=False)], 1
        )

    def forward(self, pixel_values: torch.Tensor, phrase_embeds: torch.Tensor) -> GroundedEVOutput:
        c = self.config
        feats, foreground = self.detect(pixel_values)
        missed, side = self.missed(feats)[:, 0], self.side(feats)[:, 0]
        b, g = missed.shape[0], missed.shape[-1]
        k = min(c.candidates, g * g)
        cells = candidate_cells(missed, k)
        # The verdict trains the judge and the phrase side only: through the detector it would push down
        # the real unboxed objects of other concepts whenever the judge is unsure, against the dense targets
        # that define `missed` (every object nobody boxed, whatever it is).
        top = missed.flatten(1).gather(1, cells).detach()
        offsets = self.offset(feats) if self.offset is not None else None
        centres = torch.stack([cells % g, cells // g], dim=-1).to(pixel_values.dtype)
        if offsets is None:
            centres = (centres + 0.5) * c.stride
        else:  # (B, 2, G, G) -> each candidate's (x, y) within its cell
            within = torch.sigmoid(offsets.detach()).flatten(2).gather(2, cells[:, None].expand(-1, 2, -1))
            centres = (centres + within.transpose(1, 2)) * c.stride
        sides = side.flatten(1).gather(1, cells).detach().exp() * c.image_size
        which = torch.arange(b, device=pixel_values.device).repeat_interleave(k)
        crops = crop_objects(
            self.judge_input(pixel_values[:, :3], foreground),
            which,
            centres.reshape(-1, 2),
            sides.reshape(-1),
            c.crop_size,
        )
        log_cand = F.logsigmoid(top)  # log P(candidate is a missed instance of the phrase)
        if self.needs is not None:
            needs = torch.sigmoid(self.needs(phrase_embeds)).repeat_interleave(k, dim=0)
            log_cand = log_cand + log_slot_match(
                self.judge_values(crops), needs.split(self.slot_sizes, -1)
            ).view(b, k)
        log_accept = log1mexp(log_cand).sum(-1)
        others = self.others(torch.cat([feats.mean((2, 3)), phrase_embeds], dim=-1))
        return GroundedEVOutput(
            accept_logits=log_accept - log1mexp(log_accept),
            other_logits=others,
            missed_logits=missed,
            side_logits=side,
            offset_logits=offsets,
            foreground_logits=foreground,
        )

    @torch.no_grad()
    def choice_probs(self, pixel_values: torch.Tensor, phrase_embeds: torch.Tensor) -> torch.Tensor:
        """(B, len(EV)) probabilities in choices.EV order (Accept first)."""
        out = self(pixel_values, phrase_embeds)
        accept = torch.sigmoid(out.accept_logits)[:, None]
        return torch.cat([accept, (1 - accept) * out.other_logits.softmax(-1)], dim=-1)
