"""A small convolutional vision backbone for the demo's SAM 3, plugged in where `facebook/sam3` has its ViT.

`Sam3VisionModel` builds its backbone with `AutoModel.from_config(config.backbone_config)` and reads the
output's `last_hidden_state` as a (H/patch_size x W/patch_size) grid of tokens. Any model registered with
the Auto classes that honours that contract can stand in for the ViT; this one is a residual CNN whose
strides multiply to `patch_size`. Why a CNN for the demo: a tiny ViT trained from scratch on 2 CPU cores
learns colours in minutes but shapes very slowly (15% leaf accuracy in 10 CPU-minutes, chance 6%), while
a small CNN learns outlines from local edges (64% in 6 minutes on crops). The full-size checkpoint keeps
its own Perception Encoder ViT; nothing else in the model changes.

Importing `conceptengine.model` registers the model type, so `Sam3Model.from_pretrained` loads demo
checkpoints built with it like any other.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

MODEL_TYPE = "conceptengine_conv_backbone"


class ConvBackboneConfig(PreTrainedConfig):
    """`channels[i]` is the width after the i-th stride-2 stage; `patch_size` = 2 ** len(channels) is the
    backbone's total stride, which `Sam3VisionModel` needs to read the output as a grid."""

    model_type = MODEL_TYPE

    def __init__(
        self,
        hidden_size: int = 64,
        channels: list[int] | None = None,
        blocks_per_stage: int = 1,
        image_size: int = 192,
        num_channels: int = 3,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.hidden_size = hidden_size
        self.channels = list(channels) if channels is not None else [24, 32, 48, 64]
        self.blocks_per_stage = blocks_per_stage
        self.image_size = image_size
        self.num_channels = num_channels
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        if image_size % self.patch_size:
            raise ValueError(
                f"ConvBackboneConfig: image_size {image_size} is not a multiple of the total stride "
                f"{self.patch_size} (2 ** {len(self.channels)} stages)"
            )

    @property
    def patch_size(self) -> int:
        return 2 ** len(self.channels)


POSITION_FREQUENCIES = 8


def sincos_grid(h: int, w: int, device, dtype) -> torch.Tensor:
    """(h * w, 4 * POSITION_FREQUENCIES) sine and cosine features of each cell's centre in [0, 1]^2."""
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
    freqs = torch.pi * 2.0 ** torch.arange(POSITION_FREQUENCIES, device=device, dtype=dtype) / 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    angles = torch.cat([yy.reshape(-1, 1) * freqs, xx.reshape(-1, 1) * freqs], dim=1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: training batches are a handful of images and inference is one image.
    return nn.GroupNorm(min(8, channels // 4), channels)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = _norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = _norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(x + self.norm2(self.conv2(y)))


class _Stage(nn.Module):
    """A stride-2 convolution, then residual blocks at the new resolution."""

    def __init__(self, c_in: int, c_out: int, blocks: int):
        super().__init__()
        self.down = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False)
        self.norm = _norm(c_out)
        self.blocks = nn.Sequential(*[_ResidualBlock(c_out) for _ in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(torch.relu(self.norm(self.down(x))))


class ConvBackboneModel(PreTrainedModel):
    config_class = ConvBackboneConfig
    config: ConvBackboneConfig
    main_input_name = "pixel_values"
    base_model_prefix = "conv_backbone"

    def __init__(self, config: ConvBackboneConfig):
        super().__init__(config)
        stages, c_in = [], config.num_channels
        for c in config.channels:
            stages.append(_Stage(c_in, c, config.blocks_per_stage))
            c_in = c
        self.stages = nn.Sequential(*stages)
        # Project to the width the FPN neck expects; a LayerNorm matches what the ViT hands the neck.
        self.proj = nn.Conv2d(c_in, config.hidden_size, 1)
        # Absolute position, as the ViT's position embeddings give it: convolutions are translation-
        # equivariant, and the mask head selects an instance by a dot product of a query with each pixel's
        # features, which cannot single out one of two identical objects without knowing where each pixel is.
        # A learned projection of fixed sine-cosine features works at any input size (crops in stage 1).
        self.position = nn.Linear(4 * POSITION_FREQUENCIES, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Module:
        return self.stages[0].down

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutput:
        grid = self.proj(self.stages(pixel_values.to(self.proj.weight.dtype)))  # (B, C, H/p, W/p)
        tokens = grid.flatten(2).transpose(1, 2)  # (B, H/p * W/p, C): row-major, as the neck reads it
        pos = self.position(sincos_grid(grid.shape[-2], grid.shape[-1], grid.device, grid.dtype))
        return BaseModelOutput(last_hidden_state=self.layer_norm(tokens + pos))


def register() -> None:
    """Make the Auto classes (and so `Sam3Model.from_pretrained`) know this backbone; idempotent."""
    try:
        AutoConfig.register(MODEL_TYPE, ConvBackboneConfig)
        AutoModel.register(ConvBackboneConfig, ConvBackboneModel)
    except ValueError:  # already registered in this process
        pass


# Importing this module is enough: every SAM 3 loader imports it (processing -> tiny -> here).
register()
