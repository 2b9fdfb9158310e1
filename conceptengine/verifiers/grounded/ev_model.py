"""The grounded EV scorer: a dense version of the MV scorer that looks for an instance nobody boxed.

EV asks whether every instance of the phrase has its box. A whole-image classifier that must answer that
from one pooled vector does not learn it on CPU (issue 12: swap 0.01); asking the question at every
place of the image does. The input is the image at `image_size` with the proposed boxes filled in as a
fourth channel. A conv tower keeps a grid of cells (one per `stride` pixels); for every cell it predicts

- `missed`: an object is centred here that no box covers (any object: the phrase comes in next), and
- per slot of the ontology (leaf concept, each attribute), which value that object has,

and the phrase says which values it accepts, as in the MV scorer (model.py). A cell holds a missed
instance of the phrase with P = sigmoid(missed) * prod over slots of P(an accepted value), so

    log P(Accept) = log P(no cell holds one) = sum over cells of log(1 - P(cell)).

A wrong box (an object of another concept) covers no instance of the phrase and changes nothing here:
MV rejects it, and routing lets EV decide a pair only when MV decided all of its masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from conceptengine.verifiers.choices import EV
from conceptengine.verifiers.grounded.model import conv_block, log_slot_match
from conceptengine.verifiers.grounded.phrases import MINILM

EV_IMAGE_SIZE = 192


class GroundedEVConfig(PretrainedConfig):
    model_type = "conceptengine_grounded_ev"

    def __init__(
        self,
        slots: list[list] | None = None,
        channels: list[int] | None = None,
        context_layers: int = 2,
        text_dim: int = 384,
        text_model: str = MINILM,
        image_size: int = EV_IMAGE_SIZE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.slots = [[str(name), [str(v) for v in values]] for name, values in (slots or [])]
        self.channels = list(channels or [16, 32, 64])
        self.context_layers = context_layers  # 3x3 convs at the grid's resolution: a cell sees its object
        self.text_dim = text_dim
        self.text_model = text_model
        self.image_size = image_size
        self.choices = list(EV.names)

    @property
    def stride(self) -> int:
        return 2 ** len(self.channels)

    @property
    def grid(self) -> int:
        return self.image_size // self.stride


@dataclass
class GroundedEVOutput(ModelOutput):
    accept_logits: torch.Tensor | None = None  # (B,)
    other_logits: torch.Tensor | None = None  # (B, len(EV) - 1)
    missed_logits: torch.Tensor | None = None  # (B, G, G): an unboxed object is centred in the cell
    slot_logits: dict[str, torch.Tensor] | None = None  # slot -> (B, G, G, n_values)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (Mächler, 2012)."""
    x = x.clamp_max(-1e-7)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class GroundedEVModel(PreTrainedModel):
    config_class = GroundedEVConfig
    main_input_name = "pixel_values"

    def __init__(self, config: GroundedEVConfig):
        super().__init__(config)
        widths = [4, *config.channels]
        feat = config.channels[-1]
        context = [
            nn.Sequential(nn.Conv2d(feat, feat, 3, padding=1, bias=False), nn.BatchNorm2d(feat), nn.ReLU())
            for _ in range(config.context_layers)
        ]
        self.tower = nn.Sequential(*(conv_block(a, b) for a, b in pairwise(widths)), *context)
        self.slot_names = [name for name, _ in config.slots]
        self.slot_sizes = [len(values) for _, values in config.slots]
        self.missed = nn.Conv2d(feat, 1, 1)
        self.values = nn.Conv2d(feat, sum(self.slot_sizes), 1) if self.slot_sizes else None
        self.needs = nn.Linear(config.text_dim, sum(self.slot_sizes)) if self.slot_sizes else None
        self.others = nn.Linear(feat + config.text_dim, len(config.choices) - 1)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        pass  # torch's own initialisation of each layer

    def forward(self, pixel_values: torch.Tensor, phrase_embeds: torch.Tensor) -> GroundedEVOutput:
        feats = self.tower(pixel_values)  # (B, C, G, G)
        missed = self.missed(feats)[:, 0]
        log_cell = nn.functional.logsigmoid(missed)  # log P(cell holds a missed instance of the phrase)
        slot_logits: dict[str, torch.Tensor] = {}
        if self.values is not None and self.needs is not None:
            values = self.values(feats).permute(0, 2, 3, 1).split(self.slot_sizes, dim=-1)
            needs = torch.sigmoid(self.needs(phrase_embeds)).split(self.slot_sizes, dim=-1)
            slot_logits = dict(zip(self.slot_names, values, strict=True))
            log_cell = log_cell + log_slot_match(values, needs)
        log_accept = _log1mexp(log_cell).flatten(1).sum(-1)
        accept_logits = log_accept - _log1mexp(log_accept)
        others = self.others(torch.cat([feats.mean((2, 3)), phrase_embeds], dim=-1))
        return GroundedEVOutput(
            accept_logits=accept_logits, other_logits=others, missed_logits=missed, slot_logits=slot_logits
        )

    @torch.no_grad()
    def choice_probs(self, pixel_values: torch.Tensor, phrase_embeds: torch.Tensor) -> torch.Tensor:
        """(B, len(EV)) probabilities in choices.EV order (Accept first)."""
        out = self(pixel_values, phrase_embeds)
        accept = torch.sigmoid(out.accept_logits)[:, None]
        return torch.cat([accept, (1 - accept) * out.other_logits.softmax(-1)], dim=-1)
