"""The tracker loads the way `facebook/sam3` must be loaded: a `sam3_video` checkpoint (detector + tracker).

No hub here, so a tiny checkpoint with facebook/sam3's layout is built from the real architectures
(`Sam3VideoModel` over the demo detector's config and the demo tracker's config) and saved; the same
`TrackerService` that serves the demo then serves it, and every tracker weight must come from the file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    Sam3Config,
    Sam3TrackerConfig,
    Sam3TrackerVideoConfig,
    Sam3VideoConfig,
    Sam3VideoModel,
)

from conceptengine.engine import rle
from conceptengine.pipelines.demo import SHIPPED_SAM3
from conceptengine.review.web.tracker import PointSegmenter, TrackerService, TrackerUnavailable


def _tiny_sam3_video(tracker_dir: str, out: Path) -> Sam3VideoModel:
    tracker = Sam3TrackerConfig.from_pretrained(tracker_dir)
    hidden = tracker.vision_config.fpn_hidden_size
    video_tracker = Sam3TrackerVideoConfig(
        vision_config=tracker.vision_config.to_dict(),
        prompt_encoder_config=tracker.prompt_encoder_config.to_dict(),
        mask_decoder_config=tracker.mask_decoder_config.to_dict(),
        image_size=tracker.prompt_encoder_config.image_size,
        memory_attention_hidden_size=hidden,
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=hidden,
        mem_dim=hidden,
    )
    config = Sam3VideoConfig(
        detector_config=Sam3Config.from_pretrained(str(SHIPPED_SAM3)).to_dict(),
        tracker_config=video_tracker.to_dict(),
    )
    torch.manual_seed(1)
    model = Sam3VideoModel(config).eval()
    model.save_pretrained(out)
    shutil.copy(Path(tracker_dir) / "processor_config.json", out / "processor_config.json")
    return model


def test_a_sam3_video_checkpoint_serves_clicks_with_its_own_weights(tracker_dir: str, tmp_path: Path) -> None:
    video = _tiny_sam3_video(tracker_dir, tmp_path / "sam3-video")
    assert json.loads((tmp_path / "sam3-video" / "config.json").read_text())["model_type"] == "sam3_video"
    seg = PointSegmenter(str(tmp_path / "sam3-video"))
    loaded = seg.model.state_dict()
    checked = 0
    for key, value in video.state_dict().items():
        for prefix, target in (
            ("tracker_model.", ""),
            ("tracker_neck.", "vision_encoder.neck."),
            ("detector_model.vision_encoder.backbone.", "vision_encoder.backbone."),
        ):
            name = target + key[len(prefix) :]
            if key.startswith(prefix) and name in loaded:
                assert torch.equal(loaded[name], value), key
                checked += 1
    assert checked == len(loaded)  # every tracker tensor came from the checkpoint
    image = np.zeros((24, 32, 3), dtype=np.uint8)
    mask, score = TrackerService(str(tmp_path / "sam3-video")).segment("m", image, [[5, 5]], [1], None)
    assert mask.shape == (24, 32) and mask.dtype == bool and np.isfinite(score)
    assert rle.decode(rle.encode(mask), 24, 32).sum() == mask.sum()


def test_a_checkpoint_without_tracker_weights_is_refused(tmp_path: Path) -> None:
    service = TrackerService(str(SHIPPED_SAM3))  # an image-only Sam3Model: no prompt encoder, no decoder
    with pytest.raises(TrackerUnavailable, match="holds no Sam3Tracker weights"):
        service.segment("m", np.zeros((24, 32, 3), dtype=np.uint8), [[5, 5]], [1], None)
    with pytest.raises(TrackerUnavailable, match="cannot load a Sam3TrackerModel"):
        TrackerService(str(tmp_path / "nowhere")).load()
