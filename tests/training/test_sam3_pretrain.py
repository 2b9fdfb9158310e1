"""Stage 1 of the demo recipe: the towers learn from labelled regions; the detector is left as it was."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conceptengine.engine import rle
from conceptengine.model.tiny import TinySize, build_tiny_sam3
from conceptengine.training.sam3_pretrain import PretrainConfig, Region, RegionImage, pretrain_towers
from tests.model.conftest import VOCAB


@pytest.fixture(scope="module")
def regions(tmp_path_factory) -> tuple[str, list[RegionImage]]:
    """Four 64 px images, each a red square and a blue disc on grey, with their masks and phrases."""
    from PIL import Image

    root = tmp_path_factory.mktemp("pretrain")
    images = []
    yy, xx = np.mgrid[:64, :64]
    for k in range(4):
        img = np.full((64, 64, 3), 128, np.uint8)
        square = (abs(yy - 16 - k) < 8) & (abs(xx - 18) < 8)
        disc = (yy - 44) ** 2 + (xx - 40 - k) ** 2 < 81
        img[square], img[disc] = (200, 30, 30), (30, 30, 200)
        path = root / f"im{k}.png"
        Image.fromarray(img).save(path)
        images.append(
            RegionImage(
                str(path), 64, 64,
                (Region(rle.encode(square), {"leaf": "square", "colour": "red"}, ("red square", "polygon")),
                 Region(rle.encode(disc), {"leaf": "circle", "colour": "blue"}, ("blue circle",))),
            )
        )  # fmt: skip
    init = build_tiny_sam3(
        str(root / "init"), VOCAB + ["blue circle"], image_size=64, seed=0,
        size=TinySize(hidden=32, backbone="conv", conv_channels=(8, 16, 32)),
    )  # fmt: skip
    return init, images


def cfg(init: str, out: Path, **kw) -> PretrainConfig:
    base = {"init_checkpoint": init, "output_dir": str(out), "steps": 6, "batch_size": 2, "crop_size": 32,
            "checkpoint_every": 2, "log_every": 1}  # fmt: skip
    return PretrainConfig(**(base | kw))


def test_towers_train_the_detector_stays_and_the_output_loads(regions, tmp_path):
    from transformers import Sam3Model

    init, images = regions
    out = pretrain_towers(cfg(init, tmp_path / "a", steps=30, lr=3e-3), images)
    before, after = load_file(f"{init}/model.safetensors"), load_file(f"{out}/model.safetensors")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("vision_encoder.backbone.") for k in changed)
    assert any(k.startswith("text_encoder.") for k in changed)
    assert not any(k.startswith(("detr_decoder.", "mask_decoder.", "vision_encoder.neck.")) for k in changed)
    Sam3Model.from_pretrained(out)  # loads like any checkpoint, heads left out
    log = [__import__("json").loads(line) for line in Path(out, "train_log.jsonl").read_text().splitlines()]
    assert {"cls_leaf", "cls_colour", "contrastive", "acc_leaf"} <= log[0].keys()
    # Two leaves, two colours, four images: 30 steps are plenty to separate them.
    assert np.mean([r["loss"] for r in log[-5:]]) < 0.5 * np.mean([r["loss"] for r in log[:5]])
    assert log[-1]["acc_leaf"] == 1.0


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(regions, tmp_path):
    init, images = regions
    full = pretrain_towers(cfg(init, tmp_path / "full"), images)
    # Interrupted after step 4: only that checkpoint exists when the run starts again.
    part = tmp_path / "part" / "checkpoints"
    part.mkdir(parents=True)
    shutil.copytree(Path(full) / "checkpoints" / "step-0000004", part / "step-0000004")
    resumed = pretrain_towers(cfg(init, tmp_path / "part"), images)
    a, b = load_file(f"{full}/model.safetensors"), load_file(f"{resumed}/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_no_loss_or_no_region_is_one_clear_error(regions, tmp_path):
    init, images = regions
    with pytest.raises(ValueError, match="enable classify, contrastive or both"):
        pretrain_towers(cfg(init, tmp_path / "x", classify=False, contrastive=False), images)
    empty = [RegionImage(images[0].uri, 64, 64, ())]
    with pytest.raises(ValueError, match="no image has a labelled region"):
        pretrain_towers(cfg(init, tmp_path / "y"), empty)


def test_scenes_pool_each_object_under_its_mask_and_teach_the_backbone_alone(regions, tmp_path):
    init, images = regions
    out = pretrain_towers(
        cfg(init, tmp_path / "s", steps=30, lr=3e-3, view="scenes", contrastive=False), images
    )
    before, after = load_file(f"{init}/model.safetensors"), load_file(f"{out}/model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("vision_encoder.backbone.") for k in changed)
    log = [__import__("json").loads(line) for line in Path(out, "train_log.jsonl").read_text().splitlines()]
    assert "contrastive" not in log[0]
    assert log[-1]["acc_leaf"] == 1.0 and log[-1]["acc_colour"] == 1.0


def test_a_scene_region_pools_only_its_own_image_and_specks_are_left_out(regions):
    from conceptengine.model.processing import load_sam3_inputs
    from conceptengine.training.sam3_pretrain import _SceneLoader

    init, images = regions
    speck = np.zeros((64, 64), bool)
    speck[5, 5] = True  # 1 px: far under a third of a 16 x 16 px cell
    with_speck = RegionImage(
        images[0].uri, 64, 64, (*images[0].regions, Region(rle.encode(speck), {"leaf": "dot"}, ()))
    )
    loader = _SceneLoader([with_speck, images[1]], load_sam3_inputs(init), 16, batch_size=2, seed=0)
    batch = loader.batch(0)
    assert batch.pixels.shape == (2, 3, 64, 64)
    assert [r.labels["leaf"] for r in batch.regions].count("dot") == 0
    assert len(batch.regions) == 4 and batch.pool.shape == (4, 2 * 16)
    assert torch.allclose(batch.pool.sum(1), torch.ones(4))
    # Each region's weights lie on one image's 16 cells.
    owners = (batch.pool.reshape(4, 2, 16).sum(2) > 0).sum(1)
    assert owners.tolist() == [1, 1, 1, 1]
