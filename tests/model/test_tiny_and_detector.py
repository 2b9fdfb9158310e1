import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Sam3Model

from conceptengine.engine import rle
from conceptengine.model.processing import load_sam3_inputs
from conceptengine.model.sam3_backend import Sam3Detector
from conceptengine.model.tiny import build_tiny_sam3

from .conftest import VOCAB, rgb


def _digest(d: str) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(d).iterdir())}


def test_build_is_small_deterministic_and_reloads(tiny_sam3, tmp_path):
    again = build_tiny_sam3(str(tmp_path / "again"), VOCAB, image_size=112, seed=0)
    assert _digest(tiny_sam3) == _digest(again)  # same seed, same bytes
    other = build_tiny_sam3(str(tmp_path / "other"), VOCAB, image_size=112, seed=1)
    assert _digest(other)["model.safetensors"] != _digest(tiny_sam3)["model.safetensors"]

    size = sum(p.stat().st_size for p in Path(tiny_sam3).iterdir())
    assert size < 8_000_000
    model = Sam3Model.from_pretrained(tiny_sam3)
    n_params = sum(p.numel() for p in model.parameters())
    assert 500_000 < n_params < 5_000_000
    inputs = load_sam3_inputs(tiny_sam3)
    assert model.config.text_config.vocab_size == len(inputs.tokenizer)
    tok = inputs.tokens(["red square", "a word the tokenizer never saw ÿ"])
    assert tok["input_ids"].shape == (2, 32)
    assert int(tok["input_ids"].max()) < model.config.text_config.vocab_size
    # Ontology words are single tokens: the BPE was trained on them.
    assert inputs.tokenizer.tokenize("red square") == ["red</w>", "square</w>"]


def test_detect_returns_one_detection_per_np_at_original_size(detector):
    image = rgb(70, 90)
    dets = detector.detect(image, ["red square", "zebra", "red square"], score_threshold=0.0)
    assert len(dets) == 3
    for det in dets:
        assert 0.0 <= det.presence <= 1.0
        assert len(det.masks) == len(det.boxes_xyxy) == len(det.scores) > 0
        assert det.scores == sorted(det.scores, reverse=True)
        assert all(s <= det.presence + 1e-6 for s in det.scores)  # score = sigmoid(logit) * presence
        m = rle.decode(det.masks[0], 70, 90)
        assert m.shape == (70, 90) and m.any()
        # an instance is its mask: its box is the mask's, not the box head's (verifiers crop by it)
        assert det.boxes_xyxy == [rle.box_xyxy(c, 70, 90) for c in det.masks]
    # The same NP twice gives the same answer (up to float32 rounding, which depends on its batch position).
    assert dets[0].scores == pytest.approx(dets[2].scores, rel=1e-5)
    # A threshold keeps exactly the instances scoring at or above it (compared within one batch shape).
    alone = detector.detect(image, ["red square"], score_threshold=0.0)[0]
    cut = alone.scores[len(alone.scores) // 2]
    kept = detector.detect(image, ["red square"], score_threshold=cut)[0]
    assert kept.scores == [s for s in alone.scores if s >= cut]


def test_feature_reuse_matches_full_forward_per_pair(detector):
    image = rgb(64, 80, seed=3)
    nps = ["red square", "blue triangle", "nothing like it"]
    raw = detector.forward_nps(image, nps)  # backbone once, NPs batched, text cached
    pixels = detector.inputs.pixels(image)
    tok = detector.inputs.tokens(nps)
    with torch.inference_mode():
        for i in range(len(nps)):
            ref = detector.model(
                pixel_values=pixels,
                input_ids=tok["input_ids"][i : i + 1],
                attention_mask=tok["attention_mask"][i : i + 1],
            )
            assert torch.allclose(ref.pred_logits, raw.pred_logits[i : i + 1], atol=1e-5)
            assert torch.allclose(ref.presence_logits, raw.presence_logits[i : i + 1], atol=1e-5)
            assert torch.allclose(ref.pred_boxes, raw.pred_boxes[i : i + 1], atol=1e-5)
            assert torch.allclose(ref.pred_masks, raw.pred_masks[i : i + 1], atol=1e-4)


def test_np_batches_and_text_cache_do_not_change_results(tiny_sam3, detector):
    image = rgb(50, 60, seed=5)
    nps = ["red square", "green star", "polygon"]
    small = Sam3Detector.from_pretrained(tiny_sam3, np_batch_size=1)
    a, b = small.forward_nps(image, nps), detector.forward_nps(image, nps)
    assert torch.allclose(a.pred_logits, b.pred_logits, atol=1e-5)
    assert set(small._text_cache) == set(nps)


def test_bad_inputs_raise_clear_errors(tmp_path, detector):
    with pytest.raises(FileNotFoundError, match="config.json"):
        Sam3Detector.from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((10, 10), dtype=np.uint8), ["x"])
    with pytest.raises(ValueError, match="score_threshold"):
        detector.detect(rgb(10, 10), ["x"], score_threshold=2.0)
    with pytest.raises(ValueError, match="vocabulary"):
        build_tiny_sam3(str(tmp_path / "x"), [])


def test_masks_only_for_kept_instances_match_the_full_forward(detector):

    image = rgb(64, 80, seed=9)
    nps = ["red square", "blue triangle", "polygon", "green star"]
    full = detector.forward_nps(image, nps)
    scores = torch.sigmoid(full.pred_logits) * torch.sigmoid(full.presence_logits).reshape(-1, 1)
    threshold = float(scores.max(dim=1).values.median())  # some NPs above, some below
    raw = detector.forward_scored(detector.vision_features(image), nps, threshold)
    wanted = (scores >= threshold).any(dim=1).tolist()
    assert any(wanted) and not all(wanted)
    assert [r >= 0 for r in raw.mask_rows] == wanted  # the mask decoder ran only where masks are kept
    assert torch.allclose(raw.pred_logits, full.pred_logits, atol=1e-5)
    assert torch.allclose(raw.presence_logits, full.presence_logits, atol=1e-5)
    assert torch.allclose(raw.pred_boxes, full.pred_boxes, atol=1e-5)
    for i, r in enumerate(raw.mask_rows):
        if r >= 0:
            assert torch.allclose(raw.pred_masks[r], full.pred_masks[i], atol=1e-4)
    # The detections equal post-processing of the full forward, and max_instances caps each NP.
    fast = detector.detect(image, nps, threshold)
    slow = detector.postprocess(full, 64, 80, threshold)
    assert [len(d.masks) for d in fast] == [len(d.masks) for d in slow]
    for f, s in zip(fast, slow):
        assert f.scores == pytest.approx(s.scores, abs=1e-5)
    capped = detector.detect(image, nps, 0.0, max_instances=2)
    assert all(len(d.masks) == 2 for d in capped)
    assert capped[0].masks == detector.detect(image, nps, 0.0)[0].masks[:2]
    with pytest.raises(ValueError, match="max_instances"):
        detector.detect(image, nps, 0.5, max_instances=0)


def test_resized_path_and_default_dtype(detector):
    from conceptengine.model.sam3_backend import default_dtype

    image = rgb(90, 70, seed=11)
    resized = torch.from_numpy(detector.pixel_spec.resize(image))[None]
    a = detector.detect(image, ["polygon", "red square"], 0.1)
    b = detector.detect_resized(resized, 90, 70, ["polygon", "red square"], 0.1)
    assert [(d.presence, d.masks, d.boxes_xyxy, d.scores) for d in a] == [
        (d.presence, d.masks, d.boxes_xyxy, d.scores) for d in b
    ]
    assert default_dtype("cuda") == default_dtype("cuda:1") == "bfloat16"
    assert default_dtype("cpu") == "float32" and detector.dtype == torch.float32
    with pytest.raises(ValueError, match="uint8"):
        detector.detect_resized(resized.float(), 90, 70, ["x"])
