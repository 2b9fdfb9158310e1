"""The engine's SAM 3 pre- and post-processing against transformers' own Sam3Processor.

The engine splits Sam3Processor's work (uint8 resize on a CPU stage, normalize in the model actor, its own
tokenizer call, its own thresholding and upsampling that skips what it will not keep), so this checks the
pieces give what the reference gives. Sam3Processor's image half needs torchvision, and PyPI's torchvision
does not import next to the CPU torch the project installs: the reference then runs in a second Python,
`CONCEPTENGINE_REFERENCE_PYTHON`, which `.ci/reference-python` builds (CI always does).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conceptengine.engine import rle
from conceptengine.model.processing import Sam3PixelProcessor, load_sam3_inputs, torchvision_usable
from conceptengine.pipelines.demo import SHIPPED_SAM3

from .conftest import rgb

SCRIPT = Path(__file__).with_name("sam3_processor_reference.py")
TEXTS = ["red square", "blue triangle", "striped circle", "polygon", "a phrase the tokenizer never saw ÿ"]


def reference_python() -> str | None:
    if torchvision_usable():
        return sys.executable
    found = os.environ.get("CONCEPTENGINE_REFERENCE_PYTHON")
    if not found and os.environ.get("CI"):
        pytest.fail("CI runs the Sam3Processor comparison: .ci/run sets CONCEPTENGINE_REFERENCE_PYTHON")
    return found


def run_reference(checkpoint: str, inputs: dict[str, np.ndarray], tmp_path: Path) -> dict[str, np.ndarray]:
    python = reference_python()
    if python is None:
        pytest.skip(
            "Sam3Processor needs torchvision: set CONCEPTENGINE_REFERENCE_PYTHON (.ci/reference-python)"
        )
    # The processor's files only: without config.json, Sam3Processor does not look up the model's backbone
    # type, which the engine registers for the demo's convolutional one and the reference Python cannot.
    processor_dir = tmp_path / "processor"
    processor_dir.mkdir()
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(checkpoint, name), processor_dir)
    np.savez(tmp_path / "in.npz", **inputs)
    done = subprocess.run(
        [python, str(SCRIPT), str(processor_dir), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        check=False,  # the assertion below shows the reference's own error
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(tmp_path / "out.npz"))


# Down- and upsampled, the model's own size, and a sliver. (transformers reads a 1- or 3-pixel-high array as
# channels-first; the engine's images are always (H, W, 3).)
IMAGES = [rgb(75, 101, seed=7), rgb(300, 200, seed=8), rgb(168, 168, seed=9), rgb(2, 5, seed=10)]


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_pixels_and_tokens_match_sam3processor(which, tiny_sam3, detector, tmp_path):
    checkpoint = tiny_sam3 if which == "tiny" else str(SHIPPED_SAM3)
    raw = detector.forward_nps(IMAGES[0], TEXTS)  # post-processing is checked below; any outputs do here
    ref = run_reference(checkpoint, _inputs(IMAGES, TEXTS, raw, 0.5, IMAGES[0].shape[:2]), tmp_path)

    cfg = json.loads(Path(checkpoint, "processor_config.json").read_text())["image_processor"]
    pixels = Sam3PixelProcessor(cfg)
    inputs = load_sam3_inputs(checkpoint)  # without torchvision: the engine's fallback, the tested half
    tokens = inputs.tokens(TEXTS)
    for i, image in enumerate(IMAGES):
        assert torch.equal(torch.from_numpy(ref[f"pixel_values_{i}"]), pixels(image)["pixel_values"]), (
            image.shape
        )
        assert np.array_equal(ref[f"input_ids_{i}"], tokens["input_ids"].numpy())
        assert np.array_equal(ref[f"attention_mask_{i}"], tokens["attention_mask"].numpy())


def test_postprocess_keeps_what_sam3processor_keeps(tiny_sam3, detector, tmp_path):
    """Same instances, scores and pixels per NP; the engine sorts them by score and drops empty masks."""
    image = rgb(90, 130, seed=11)
    raw = detector.forward_nps(image, TEXTS)
    scores = (torch.sigmoid(raw.pred_logits) * torch.sigmoid(raw.presence_logits).reshape(-1, 1)).flatten()
    # Halfway between two neighbouring scores near the median: some NPs keep several, none sits on the edge.
    s = scores.sort().values
    mid = len(s) // 2
    threshold = float((s[mid] + s[mid + 1]) / 2)
    ref = run_reference(tiny_sam3, _inputs([], TEXTS, raw, threshold, image.shape[:2]), tmp_path)

    mine = detector.postprocess(raw, *image.shape[:2], threshold=threshold)
    kept = 0
    for n, det in enumerate(mine):
        ref_scores, ref_masks = ref[f"scores_{n}"], ref[f"masks_{n}"]
        order = np.argsort(-ref_scores, kind="stable")
        nonempty = [k for k in order if ref_masks[k].any()]
        np.testing.assert_allclose(det.scores, ref_scores[nonempty], rtol=1e-6)
        for mask, k in zip(det.masks, nonempty, strict=True):
            assert np.array_equal(rle.decode(mask, *image.shape[:2]), ref_masks[k])
        kept += len(det.masks)
    assert 0 < kept < scores.numel()


def _inputs(images: list[np.ndarray], texts: list[str], raw, threshold: float, size) -> dict[str, np.ndarray]:
    """What the reference script reads: images to pre-process, phrases, one image's raw outputs (of `size`)."""
    height, width = size
    return {f"image_{i}": img for i, img in enumerate(images)} | {
        "texts": np.array(texts),
        "pred_logits": raw.pred_logits.float().numpy(),
        "presence_logits": raw.presence_logits.float().numpy(),
        "pred_boxes": raw.pred_boxes.float().numpy(),
        "pred_masks": raw.pred_masks.float().numpy(),
        "height": np.array(height),
        "width": np.array(width),
        "threshold": np.array(threshold),
    }
