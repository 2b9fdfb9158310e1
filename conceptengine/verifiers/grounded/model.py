"""The grounded MV scorer as a transformers model (save_pretrained / from_pretrained like any checkpoint).

Late fusion, so the verdict has to come from the picture: the conv tower sees only the two views of the mask
(crops.py; one tower, run on each view, their features side by side), the phrase sees only its embedding,
and they meet in one formula. For every slot of the ontology (the leaf concept, each attribute) the tower
predicts which value the object has, and the phrase predicts which values it accepts (a sigmoid per value:
"polygon" accepts every polygon leaf, "red" one colour, and a phrase that names no colour accepts them
all). Then

    logit(Accept) = quality + bias + sum over slots of log sum_v needs(v) * P(value v)

so a red square masked well is accepted for "red shape" and refused for "blue shape" or "circle", and a
sloppy mask of the right object is refused through `quality`. The other MV choices share 1 - P(Accept)
by a small head of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from conceptengine.verifiers.choices import MV
from conceptengine.verifiers.grounded.crops import CROP_SIZE, VIEW_CHANNELS, VIEW_SCALES
from conceptengine.verifiers.grounded.phrases import MINILM

FLOOR = 1e-4  # the smallest match probability a slot contributes: log stays finite


def log_slot_match(values: Sequence[torch.Tensor], needs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over slots of log P(the object has a value the phrase accepts): `values[s]` are (..., n_s)
    logits of what the object is, `needs[s]` (B, n_s) sigmoids of what the phrase accepts (broadcast
    over any axes between, e.g. the EV grid's)."""
    total = torch.zeros(())
    for v, need in zip(values, needs, strict=True):
        shape = (need.shape[0],) + (1,) * (v.dim() - 2) + (need.shape[1],)
        match = (need.reshape(shape) * v.softmax(-1)).sum(-1)
        total = total + torch.log(match.clamp_min(FLOOR))
    return total


class GroundedMVConfig(PretrainedConfig):
    model_type = "conceptengine_grounded_mv"

    def __init__(
        self,
        slots: list[list] | None = None,
        channels: list[int] | None = None,
        text_dim: int = 384,
        text_model: str = MINILM,
        crop_size: int = CROP_SIZE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # [[slot, [values...]], ...]: a list, not a dict, because saved configs sort their keys and the
        # slots' order is the order of the heads' outputs.
        self.slots = [[str(name), [str(v) for v in values]] for name, values in (slots or [])]
        self.channels = list(channels or [24, 48, 96, 128])
        self.text_dim = text_dim
        self.text_model = text_model
        self.crop_size = crop_size
        self.choices = list(MV.names)


@dataclass
class GroundedMVOutput(ModelOutput):
    accept_logits: torch.Tensor | None = None  # (B,)
    other_logits: torch.Tensor | None = None  # (B, len(choices) - 1): the non-Accept choices
    slot_logits: dict[str, torch.Tensor] | None = None  # slot -> (B, n_values)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)
    )


class GroundedMVModel(PreTrainedModel):
    config_class = GroundedMVConfig
    main_input_name = "pixel_values"

    def __init__(self, config: GroundedMVConfig):
        super().__init__(config)
        widths = [VIEW_CHANNELS, *config.channels]
        self.tower = nn.Sequential(
            *(conv_block(a, b) for a, b in pairwise(widths)),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        feat = config.channels[-1] * len(VIEW_SCALES)  # one tower's features per view, side by side
        self.slot_names = [name for name, _ in config.slots]
        sizes = [len(values) for _, values in config.slots]
        self.slot_sizes = sizes
        self.values = nn.Linear(feat, sum(sizes)) if sizes else None
        self.needs = nn.Linear(config.text_dim, sum(sizes)) if sizes else None
        self.quality = nn.Sequential(nn.Linear(feat, 64), nn.ReLU(), nn.Linear(64, 1))
        # The non-Accept choices see both sides: "Whole image" or "Flag label" depend on the phrase.
        self.others = nn.Linear(feat + config.text_dim, len(config.choices) - 1)
        self.bias = nn.Parameter(torch.zeros(1))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        pass  # torch's own initialisation of each layer

    def forward(self, pixel_values: torch.Tensor, phrase_embeds: torch.Tensor) -> GroundedMVOutput:
        b, _, h, w = pixel_values.shape
        feats = self.tower(pixel_values.reshape(-1, VIEW_CHANNELS, h, w)).reshape(b, -1)
        logit = self.quality(feats)[:, 0] + self.bias
        slot_logits: dict[str, torch.Tensor] = {}
        if self.values is not None and self.needs is not None:
            values = self.values(feats).split(self.slot_sizes, dim=-1)
            needs = torch.sigmoid(self.needs(phrase_embeds)).split(self.slot_sizes, dim=-1)
            slot_logits = dict(zip(self.slot_names, values, strict=True))
            logit = logit + log_slot_match(values, needs)
        others = self.others(torch.cat([feats, phrase_embeds], dim=-1))
        return GroundedMVOutput(accept_logits=logit, other_logits=others, slot_logits=slot_logits)

    @torch.no_grad()
    def choice_probs(self, pixel_values: torch.Tensor, phrase_embeds: torch.Tensor) -> torch.Tensor:
        """(B, len(choices)) probabilities in choices.MV order (Accept first)."""
        out = self(pixel_values, phrase_embeds)
        accept = torch.sigmoid(out.accept_logits)[:, None]
        return torch.cat([accept, (1 - accept) * out.other_logits.softmax(-1)], dim=-1)
