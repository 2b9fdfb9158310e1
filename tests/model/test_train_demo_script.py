"""scripts/train_demo_sam3.py as a GPU box runs it: in-process (no Ray), then continued from its own output
with other loss weights and no dropout, the way the shipped checkpoint's calibration stage was made."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_demo_sam3.py"
TINY = ["--n-train", "12", "--n-gold", "3", "--image-size", "128", "--threads", "1", "--in-process",
        "--pretrain-steps", "2", "--pretrain-batch", "2", "--calibrate-steps", "2", "--curve-points", "1",
        "--calibration-images", "3"]  # fmt: skip


def _run(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_fresh_run_then_continuation_records_both_stages(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    _run("--steps", "2", "--work", str(tmp_path / "w1"), "--out", str(first), "--device", "cpu")
    fresh = json.loads((first / "metrics.json").read_text())
    assert "untrained_init" in fresh and fresh["earlier_stages"] == []
    # All three stages ran, each left a point on the learning curve, and the report covers every leaf.
    assert set(fresh["stages"]) == {"pretrain", "stage2-detector", "stage3-calibrate"}
    assert {p["stage"] for p in fresh["learning_curve"]["detector"]} == {
        "stage2-detector",
        "stage3-calibrate",
    }
    assert fresh["learning_curve"]["pretrain"] and "acc_leaf" in fresh["learning_curve"]["pretrain"][-1]
    assert len(fresh["per_leaf"]) == 22 and "polygon" in fresh["per_family"]
    assert fresh["per_phrase_kind"] and all(
        kind.split(" + ")[0] in {"root", "family", "group", "leaf"} for kind in fresh["per_phrase_kind"]
    )
    assert (first / "learning_curve.png").stat().st_size > 1000
    # Stage 4 tried every presence shift on its own world and shipped the best one.
    fit = fresh["presence_bias"]
    assert fit["world_seed"] != fresh["world"]["seed"] and len(fit["cgF1"]) == 7
    assert fit["cgF1"][str(fit["offset"])] == max(fit["cgF1"].values())
    assert set(fresh["before_presence_bias"]) == set(fresh["trained"])

    _run(
        "--steps", "2", "--work", str(tmp_path / "w2"), "--out", str(second), "--init", str(first),
        "--loss-weights", '{"focal_gamma": 0.0, "focal_alpha": 0.75}', "--dropout", "0", "--freeze-text",
        "--backbone-lr-scale", "0.1", "--scene-pretrain-steps", "2", "--scene-pretrain-batch", "2",
        "--scene-pretrain-images", "4",
    )  # fmt: skip
    cont = json.loads((second / "metrics.json").read_text())
    # The continuation is compared with the checkpoint it started from, and keeps that one's training record.
    assert cont["init"] == fresh["trained"]
    assert cont["earlier_stages"] == [fresh["training"]]
    # Its learning curve is the first call's, then its own stages, later on the same minute axis.
    curve, first_curve = cont["learning_curve"], fresh["learning_curve"]
    # Stage 1b ran on the init: its accuracies follow the first call's stage 1, on the same minute axis.
    assert set(cont["stages"]) == {"pretrain-scenes", "stage2-detector", "stage3-calibrate"}
    assert curve["pretrain"][: len(first_curve["pretrain"])] == first_curve["pretrain"]
    scenes = curve["pretrain"][len(first_curve["pretrain"]) :]
    assert (
        scenes and {p["stage"] for p in scenes} == {"pretrain (scenes) (call 2)"} and "acc_leaf" in scenes[0]
    )
    assert cont["training"]["scene_pretrain_steps"] == 2
    # ... on scenes of its own, rendered from another seed than the detector's training images and gold.
    assert cont["training"]["scene_pretrain_images"] == 4
    scene_images = {p.read_bytes() for p in (tmp_path / "w2" / "scene-world" / "images").iterdir()}
    world_images = {p.read_bytes() for p in (tmp_path / "w2" / "world" / "images").iterdir()}
    assert len(scene_images) == 4 and not scene_images & world_images
    assert curve["detector"][: len(first_curve["detector"])] == first_curve["detector"]
    added = curve["detector"][len(first_curve["detector"]) :]
    assert {p["stage"] for p in added} == {"stage2-detector (call 2)", "stage3-calibrate (call 2)"}
    assert min(p["minutes"] for p in added) >= max(p["minutes"] for p in first_curve["detector"])
    # Same architecture, but the continuation trained its DETR without dropout, as asked.
    assert fresh["architecture"]["dropout"] == 0.1
    assert cont["architecture"] == {**fresh["architecture"], "dropout": 0.0}
    config = json.loads((second / "config.json").read_text())
    assert config["detr_encoder_config"]["dropout"] == config["detr_decoder_config"]["dropout"] == 0.0
    # Its own loss weights are the demo's with the overrides on top, saved for in-loop retraining to inherit.
    weights = json.loads((second / "loss_weights.json").read_text())
    assert (weights["focal_gamma"], weights["focal_alpha"], weights["presence"]) == (0.0, 0.75, 10.0)
    # --freeze-text: stages 2 and 3 left the text tower exactly as the first call shipped it (and stage 1b,
    # classification only, never touches it).
    assert cont["training"]["freeze_text"] and not fresh["training"]["freeze_text"]
    assert (cont["training"]["backbone_lr_scale"], fresh["training"]["backbone_lr_scale"]) == (0.1, 1.0)
    before, after = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    text = [k for k in after if k.startswith(("text_encoder.", "text_projection."))]
    assert text and all(torch.equal(before[k], after[k]) for k in text)
    assert not all(torch.equal(before[k], after[k]) for k in after if k.startswith("detr_decoder."))
