"""The demo's convolutional backbone stands in for the ViT through Sam3VisionModel's AutoModel seam."""

import hashlib
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, Sam3Model

from conceptengine.model.conv_backbone import ConvBackboneConfig, ConvBackboneModel
from conceptengine.model.sam3_backend import Sam3Detector
from conceptengine.model.tiny import TinySize, build_tiny_sam3

from .conftest import VOCAB, rgb

CONV = TinySize(backbone="conv", conv_channels=(8, 16, 16, 32))


@pytest.fixture(scope="module")
def conv_sam3(tmp_path_factory) -> str:
    return build_tiny_sam3(str(tmp_path_factory.mktemp("conv")), VOCAB, image_size=128, seed=0, size=CONV)


def test_output_is_the_row_major_token_grid_the_neck_reads():
    torch.manual_seed(0)  # the ratio below is 8-94 over random inits (3 of 30 under 10): fix the init
    model = ConvBackboneModel(ConvBackboneConfig(hidden_size=32, channels=[8, 16], image_size=64)).eval()
    assert model.config.patch_size == 4
    x = torch.randn(2, 3, 64, 64)
    tokens = model(x).last_hidden_state
    assert tokens.shape == (2, 16 * 16, 32)
    # Token k is grid cell (k // 16, k % 16): a change in the top-left corner moves the first token far more
    # than the last (GroupNorm's statistics spread a little of it everywhere).
    y = x.clone()
    y[:, :, :4, :4] += 5.0
    changed = (model(y).last_hidden_state - tokens).abs().sum(-1)[0]
    assert changed[0] > 10 * changed[-1]


def test_sam3_with_conv_backbone_saves_loads_and_detects(conv_sam3, tmp_path):
    again = build_tiny_sam3(str(tmp_path / "again"), VOCAB, image_size=128, seed=0, size=CONV)
    digest = lambda d: hashlib.sha256((Path(d) / "model.safetensors").read_bytes()).hexdigest()
    assert digest(again) == digest(conv_sam3)  # deterministic per seed
    model = Sam3Model.from_pretrained(conv_sam3)
    assert isinstance(model.vision_encoder.backbone, ConvBackboneModel)
    assert model.config.vision_config.backbone_config.patch_size == 16
    assert isinstance(AutoModel.from_config(model.config.vision_config.backbone_config), ConvBackboneModel)
    det = Sam3Detector.from_pretrained(conv_sam3)
    out = det.detect(rgb(90, 70), ["red square", "polygon"], score_threshold=0.0)
    assert len(out) == 2 and out[0].masks and len(out[0].masks) == len(out[0].scores)
    # The mask head works at 4x the token grid: 128 px / stride 16 = 8 -> 32 x 32 masks.
    raw = det.forward_nps(rgb(128, 128), ["red square"])
    assert raw.pred_masks.shape[-1] == 32


def test_bad_image_size_or_backbone_names_the_problem(tmp_path):
    with pytest.raises(ValueError, match="multiple of 16"):
        build_tiny_sam3(str(tmp_path / "a"), VOCAB, image_size=120, size=CONV)
    with pytest.raises(ValueError, match="'vit' or 'conv'"):
        build_tiny_sam3(str(tmp_path / "b"), VOCAB, image_size=128, size=TinySize(backbone="resnet"))
    with pytest.raises(ValueError, match="not a multiple of the total stride"):
        ConvBackboneConfig(channels=[8, 8, 8], image_size=100)
