"""The SAM 3 trainer: data from shards and tables, overfitting one image, exact resume, reload, Ray local mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds
from safetensors.torch import load_file
from transformers import Sam3Model

from conceptengine.config import ConfigError
from conceptengine.model.processing import load_sam3_inputs
from conceptengine.model.train_data import Sam3TrainDataset, StepBatchSampler, collate
from conceptengine.training.sam3 import (
    LOSS_WEIGHTS_FILE,
    TrainSam3Config,
    checkpoint_dirs,
    effective_loss_weights,
    run_training,
    train_sam3,
)
from conceptengine.training.sam3_ray import load_train_config, train_sam3_from_yaml

IMAGE = 112


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 3-image rendered world, its oracle pairs as a Parquet table, and a tiny SAM 3 over its vocabulary."""
    from conceptengine.model.tiny import build_tiny_sam3
    from conceptengine.pipelines.demo import ontology_vocabulary
    from conceptengine.sim.oracle import Oracle
    from conceptengine.sim.render import SceneStyle
    from conceptengine.sim.world import build_world

    root = tmp_path_factory.mktemp("train")
    no_crowds = SceneStyle(crowd_share=0.0)
    w = build_world(root / "world", n_train=3, n_gold=0, seed=11, image_size=IMAGE, style=no_crowds)
    table = Oracle(root / "world").gold_annotations(split="train", nps_per_image=6, negative_share=0.5)
    pq.write_table(table, root / "ann.parquet")
    init = build_tiny_sam3(str(root / "init"), ontology_vocabulary(w.graph), image_size=IMAGE, seed=0)
    return {"root": root, "table": table, "init": init}


def write_shard(table, path: Path) -> None:
    """The engine's shard layout (round/commit.py): one sample per image, its pairs in the json."""
    by_media: dict[str, list[dict]] = {}
    for r in table.to_pylist():
        by_media.setdefault(r["media_id"], []).append(r)
    with wds.TarWriter(str(path)) as sink:
        for media_id, rows in sorted(by_media.items()):
            meta = {
                "media_id": media_id,
                "width": rows[0]["width"],
                "height": rows[0]["height"],
                "pairs": [
                    {
                        "pair_id": r["pair_id"],
                        "noun_phrase": r["noun_phrase"],
                        "is_negative": r["is_negative"],
                        "is_exhaustive": True,
                        "masks": [{"rle": m["rle"], "box_xyxy": list(m["box_xyxy"])} for m in r["masks"]],
                    }
                    for r in rows
                ],
            }
            sink.write(
                {"__key__": media_id, "png": Path(rows[0]["uri"]).read_bytes(), "json": json.dumps(meta)}
            )


def cfg(world, out: Path, **kw) -> TrainSam3Config:
    base = {
        "init_checkpoint": world["init"],
        "output_dir": str(out),
        "annotations": str(world["root"] / "ann.parquet"),
        "steps": 4,
        "batch_size": 2,
        "max_nps_per_image": 4,
        "warmup_steps": 1,
        "log_every": 1,
        "checkpoint_every": 2,
        "hflip": True,
    }
    base.update(kw)
    return TrainSam3Config(**base)


def test_shards_and_annotation_tables_give_identical_items(world, tmp_path):
    shard = tmp_path / "train-000000.tar"
    write_shard(world["table"], shard)
    inputs = load_sam3_inputs(world["init"])
    a = Sam3TrainDataset.from_shards([str(shard)], inputs, mask_size=32, max_nps_per_image=4, seed=3)
    b = Sam3TrainDataset.from_annotations(world["table"], inputs, mask_size=32, max_nps_per_image=4, seed=3)
    assert len(a) == len(b) == 3
    for i in range(3):
        x, y = a[(i, 1)], b[(i, 1)]
        assert torch.equal(x.pixel_values, y.pixel_values) and torch.equal(x.input_ids, y.input_ids)
        assert all(torch.equal(p, q) for p, q in zip(x.boxes, y.boxes, strict=True))
        assert all(torch.equal(p, q) for p, q in zip(x.masks, y.masks, strict=True))
    item = b[(0, 0)]
    assert item.input_ids.shape[0] <= 4 and item.is_negative.any() and (~item.is_negative).any()
    for boxes, masks, neg in zip(item.boxes, item.masks, item.is_negative, strict=True):
        assert boxes.shape[0] == masks.shape[0] and bool(neg) == (boxes.shape[0] == 0)
        assert ((boxes >= 0) & (boxes <= 1)).all() and masks.shape[-2:] == (32, 32)
    batch = collate([b[(0, 0)], None, b[(1, 0)]])
    assert batch.pixel_values.shape[0] == 2 and batch.num_pairs == sum(batch.nps_per_image)


def test_max_negative_share_caps_each_images_negatives(world):
    # At 0.5 an image keeps as many negatives as it has positives, and a negative-only image keeps one.
    import pyarrow as pa

    inputs = load_sam3_inputs(world["init"])
    rows = world["table"].to_pylist()
    media = sorted({r["media_id"] for r in rows})
    # Image 0 as it is; image 1 with its positives removed (a negative-only image, like most committed ones).
    keep = [r["media_id"] == media[0] or (r["media_id"] == media[1] and r["is_negative"]) for r in rows]
    table = world["table"].filter(pa.array(keep))
    n_pos = sum(1 for r in rows if r["media_id"] == media[0] and not r["is_negative"])
    capped = Sam3TrainDataset.from_annotations(
        table, inputs, 32, max_nps_per_image=50, max_negative_share=0.5
    )
    plain = Sam3TrainDataset.from_annotations(table, inputs, 32, max_nps_per_image=50)
    for epoch in range(3):
        mixed, negative_only = capped[(0, epoch)], capped[(1, epoch)]
        assert int((~mixed.is_negative).sum()) == n_pos and int(mixed.is_negative.sum()) == n_pos
        assert negative_only.is_negative.tolist() == [True]
    assert int(plain[(1, 0)].is_negative.sum()) == sum(keep) - 2 * n_pos  # uncapped: every negative
    with pytest.raises(ValueError, match="max_negative_share"):
        Sam3TrainDataset.from_annotations(table, inputs, 32, max_negative_share=1.0)


def test_flip_moves_boxes_and_masks_with_the_image(world):
    inputs = load_sam3_inputs(world["init"])
    plain = Sam3TrainDataset.from_annotations(world["table"], inputs, 32, max_nps_per_image=50, hflip=False)
    flips = Sam3TrainDataset.from_annotations(world["table"], inputs, 32, max_nps_per_image=50, hflip=True)
    for epoch in range(8):  # some epoch flips image 0
        x, y = plain[(0, epoch)], flips[(0, epoch)]
        if not torch.equal(x.pixel_values, y.pixel_values):
            assert torch.allclose(x.pixel_values.flip(-1), y.pixel_values)
            k = next(i for i, b in enumerate(x.boxes) if len(b))
            assert torch.allclose(1 - x.boxes[k][:, 0], y.boxes[k][:, 0], atol=1 / IMAGE)
            assert torch.equal(x.masks[k].flip(-1), y.masks[k])
            return
    pytest.fail("no epoch flipped the image")


def test_batches_depend_only_on_seed_step_and_rank():
    full = StepBatchSampler(10, 4, seed=1, start_step=0, total_steps=7)
    tail = StepBatchSampler(10, 4, seed=1, start_step=3, total_steps=7)
    assert list(full)[3:] == list(tail)
    r0 = StepBatchSampler(10, 2, seed=1, start_step=0, total_steps=5, rank=0, world_size=2)
    r1 = StepBatchSampler(10, 2, seed=1, start_step=0, total_steps=5, rank=1, world_size=2)
    first_epoch = [k for s in range(3) for k in r0.batch(s) + r1.batch(s)][:10]
    assert sorted(i for i, e in first_epoch if e == 0) == list(range(10)), (
        "ranks split an epoch without overlap"
    )


def test_tiny_run_overfits_one_image(world, tmp_path):
    # The same 6 pairs every step (no flip, no NP subsampling): a pure memorisation task.
    media = world["table"]["media_id"].to_pylist()
    one = world["table"].filter(np.array([m == media[0] for m in media]))
    pq.write_table(one, tmp_path / "one.parquet")
    c = cfg(
        world, tmp_path / "out", annotations=str(tmp_path / "one.parquet"), steps=25, batch_size=1,
        max_nps_per_image=6, lr=2e-3, warmup_steps=3, hflip=False, grad_clip=1.0, checkpoint_every=25,
    )  # fmt: skip
    train_sam3(c)
    log = [json.loads(x) for x in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    first, last = log[0], log[-1]
    assert last["loss"] < 0.5 * first["loss"], (first["loss"], last["loss"])
    for term in ("cls", "bbox", "giou", "mask_focal", "semantic_bce"):
        assert last[term] < first[term], term


def test_resume_continues_at_the_saved_step_and_equals_an_uninterrupted_run(world, tmp_path):
    straight = cfg(world, tmp_path / "straight")
    train_sam3(straight)

    resumed = cfg(world, tmp_path / "resumed")

    class Crash(RuntimeError):
        pass

    def crash_after_step_3(metrics: dict) -> None:
        if metrics["step"] == 3:
            raise Crash

    with pytest.raises(Crash):
        run_training(resumed, report=crash_after_step_3)
    assert [d.name for d in checkpoint_dirs(resumed.output_dir)] == ["step-0000002"]
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    train_sam3(resumed)
    summary = json.loads((tmp_path / "resumed" / "training.json").read_text())
    assert summary["resumed_from"] == 2 and summary["steps"] == 4
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    init = load_file(Path(world["init"]) / "model.safetensors")
    assert any(not torch.equal(a[k], init[k]) for k in a), "training changed nothing"
    assert [d.name for d in checkpoint_dirs(resumed.output_dir)] == ["step-0000002", "step-0000004"]


def test_output_dir_reloads_like_the_input_and_frozen_vision_stays_fixed(world, tmp_path):
    from conceptengine.engine.media import load_rgb
    from conceptengine.model.sam3_backend import Sam3Detector

    out = train_sam3(cfg(world, tmp_path / "out", steps=2, freeze_vision=True))
    for f in Path(world["init"]).iterdir():
        assert (Path(out) / f.name).exists(), f.name
    det = Sam3Detector.from_pretrained(out)
    row = world["table"].to_pylist()[0]
    dets = det.detect(load_rgb(row["uri"]), [row["noun_phrase"], "blue circle"])
    assert len(dets) == 2 and all(0.0 <= d.presence <= 1.0 for d in dets)
    a = load_file(Path(out) / "model.safetensors")
    init = load_file(Path(world["init"]) / "model.safetensors")
    vision = [k for k in a if k.startswith("vision_encoder.")]
    assert vision and all(torch.equal(a[k], init[k]) for k in vision)
    assert any(not torch.equal(a[k], init[k]) for k in a if k.startswith("detr_decoder."))


def test_freeze_text_keeps_the_text_tower_and_trains_the_rest(world, tmp_path):
    out = train_sam3(cfg(world, tmp_path / "out", steps=2, freeze_text=True))
    a = load_file(Path(out) / "model.safetensors")
    init = load_file(Path(world["init"]) / "model.safetensors")
    text = [k for k in a if k.startswith(("text_encoder.", "text_projection."))]
    assert text and all(torch.equal(a[k], init[k]) for k in text)
    assert any(not torch.equal(a[k], init[k]) for k in a if k.startswith("vision_encoder."))
    assert any(not torch.equal(a[k], init[k]) for k in a if k.startswith("detr_encoder."))


def _largest_change(init: dict, out: str, prefix: str) -> float:
    a = load_file(Path(out) / "model.safetensors")
    return max((a[k] - init[k]).abs().max().item() for k in a if k.startswith(prefix))


def test_backbone_lr_scale_slows_the_backbone_only(world, tmp_path):
    init = load_file(Path(world["init"]) / "model.safetensors")
    full = train_sam3(cfg(world, tmp_path / "full", steps=2))
    slow = train_sam3(cfg(world, tmp_path / "slow", steps=2, backbone_lr_scale=0.001))
    # AdamW's steps are about lr in size whatever the gradient, so a 1,000x smaller rate moves ~1,000x less.
    assert (
        _largest_change(init, slow, "vision_encoder.backbone.")
        < _largest_change(init, full, "vision_encoder.backbone.") / 100
    )
    assert _largest_change(init, slow, "vision_encoder.neck.") == pytest.approx(
        _largest_change(init, full, "vision_encoder.neck."), rel=0.5
    )


def test_token_embedding_lr_scale_speeds_up_the_token_embeddings_only(world, tmp_path):
    init = load_file(Path(world["init"]) / "model.safetensors")
    full = train_sam3(cfg(world, tmp_path / "full", steps=2))
    fast = train_sam3(cfg(world, tmp_path / "fast", steps=2, token_embedding_lr_scale=10.0))
    embeddings = "text_encoder.text_model.embeddings.token_embedding."
    assert _largest_change(init, fast, embeddings) > 5 * _largest_change(init, full, embeddings)
    for prefix in ("text_projection.", "detr_encoder."):
        assert _largest_change(init, fast, prefix) == pytest.approx(
            _largest_change(init, full, prefix), rel=0.5
        )


def test_merge_alpha_moves_the_output_towards_the_init(world, tmp_path):
    init = load_file(Path(world["init"]) / "model.safetensors")
    plain = load_file(Path(train_sam3(cfg(world, tmp_path / "plain", steps=2))) / "model.safetensors")
    back = train_sam3(cfg(world, tmp_path / "back", steps=2, merge_alpha=0.0))
    merged = load_file(Path(back) / "model.safetensors")
    assert any(not torch.equal(plain[k], init[k]) for k in plain)  # the fine-tune did move
    assert all(torch.equal(merged[k], init[k]) for k in init if init[k].is_floating_point())
    assert json.loads((Path(back) / "training.json").read_text())["merge_alpha"] == 0.0


def test_a_fine_tune_of_a_trained_checkpoint_writes_its_own_log_and_summary(world, tmp_path):
    # The init is itself a training output (like the shipped demo SAM 3): its log, summary and metrics
    # describe ITS training, and must not replace the new run's.
    first = train_sam3(cfg(world, tmp_path / "first", steps=2))
    (Path(first) / "metrics.json").write_text('{"gold": "of the first run"}')
    second = train_sam3(cfg(world, tmp_path / "second", init_checkpoint=first, steps=3))
    log = [json.loads(x) for x in (Path(second) / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert json.loads((Path(second) / "training.json").read_text())["init_checkpoint"] == first
    assert not (Path(second) / "metrics.json").exists()


def test_ray_local_mode_from_yaml_with_overrides(world, tmp_path):
    path = tmp_path / "train.yaml"
    c = cfg(world, tmp_path / "ray-out", steps=2)
    path.write_text(json.dumps(c.model_dump(mode="json")))
    out = train_sam3_from_yaml(path, ["steps=1", "num_workers=0"])
    summary = json.loads((Path(out) / "training.json").read_text())
    assert summary["steps"] == 1 and (Path(out) / "model.safetensors").exists()


def test_config_errors_name_the_key(world, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({**cfg(world, tmp_path / "o").model_dump(mode="json"), "stepz": 3}))
    with pytest.raises(ConfigError, match="stepz"):
        load_train_config(path)
    with pytest.raises(ConfigError, match="lr"):
        load_train_config(_write(tmp_path, world, lr=-1))
    with pytest.raises(ValueError, match="no training data"):
        TrainSam3Config(init_checkpoint=world["init"], output_dir=str(tmp_path / "o"))
    with pytest.raises(ValueError, match="unknown loss weight"):
        cfg(world, tmp_path / "o", loss_weights={"presnce": 1.0})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_sam3(cfg(world, tmp_path / "o", annotations=str(tmp_path / "missing.parquet")))


def _write(tmp_path: Path, world, **kw) -> Path:
    data = {**cfg(world, tmp_path / "o").model_dump(mode="json"), **kw}
    p = tmp_path / "kw.yaml"
    p.write_text(json.dumps(data))
    return p


def test_fine_tuning_keeps_the_loss_weights_the_checkpoint_was_trained_with(world, tmp_path):
    first = train_sam3(
        cfg(world, tmp_path / "a", steps=1, loss_weights={"presence": 7.0, "focal_alpha": 0.4})
    )
    recorded = json.loads((Path(first) / LOSS_WEIGHTS_FILE).read_text())
    assert recorded["presence"] == 7.0 and recorded["focal_alpha"] == 0.4 and recorded["cls"] == 2.0

    inherited = effective_loss_weights(cfg(world, tmp_path / "b", init_checkpoint=first))
    assert (inherited.presence, inherited.focal_alpha) == (7.0, 0.4)
    overridden = effective_loss_weights(
        cfg(world, tmp_path / "c", init_checkpoint=first, loss_weights={"presence": 3.0})
    )
    assert (overridden.presence, overridden.focal_alpha) == (3.0, 0.4)
    assert effective_loss_weights(cfg(world, tmp_path / "d")).focal_alpha == 0.25  # no file: library defaults

    (Path(first) / LOSS_WEIGHTS_FILE).write_text(json.dumps({"presense": 1.0}))
    with pytest.raises(ValueError, match="loss_weights.json: unknown loss weight"):
        effective_loss_weights(cfg(world, tmp_path / "e", init_checkpoint=first))


# -- replay of base data ---------------------------------------------------------------------------------
def _records(prefix: str, n: int):
    from conceptengine.model.train_data import ImageRecord, PairRecord

    pair = PairRecord("square", True, (), ())
    return [ImageRecord(f"{prefix}{i:03d}", 8, 8, (pair,)) for i in range(n)]


def test_replay_makes_up_about_its_share_of_the_images_deterministically():
    from conceptengine.training.sam3 import replay_records

    base = _records("r", 40)
    for n, share in ((10, 0.5), (30, 0.25), (7, 0.3), (100, 0.2)):
        picked = replay_records(base, n, share, seed=3)
        assert len(picked) == round(n * share / (1 - share))
        assert abs(len(picked) / (n + len(picked)) - share) <= 0.5 / (n + len(picked)) + 1e-9
        assert picked == replay_records(base, n, share, seed=3)  # a pure function of its inputs
    ids = [r.media_id for r in replay_records(base, 10, 0.5, seed=3)]
    assert len(set(ids)) == len(ids) == 10  # no repetition while the replay set is large enough
    assert ids != [r.media_id for r in replay_records(base, 10, 0.5, seed=4)]  # the seed picks them
    # A replay set smaller than needed repeats: every image the same number of times, then a draw.
    small = _records("s", 4)
    counts = np.unique([r.media_id for r in replay_records(small, 30, 0.25, seed=0)], return_counts=True)[1]
    assert counts.sum() == 10 and sorted(counts.tolist()) == [2, 2, 3, 3]
    assert replay_records(base, 10, 0.0, seed=0) == []
    with pytest.raises(ValueError, match="replay_share"):
        replay_records(base, 10, 1.0, seed=0)


@pytest.fixture(scope="module")
def replay_table(world, tmp_path_factory):
    """Another rendered world's oracle pairs: the base data a fine-tune replays."""
    from conceptengine.sim.oracle import Oracle
    from conceptengine.sim.world import build_world

    root = tmp_path_factory.mktemp("replay")
    build_world(root / "world", n_train=5, n_gold=0, seed=12, image_size=IMAGE)
    table = Oracle(root / "world").gold_annotations(split="train", nps_per_image=6, negative_share=0.8)
    pq.write_table(table, root / "replay.parquet")
    return root / "replay.parquet"


def test_replay_images_join_the_records_and_are_capped_like_committed_ones(world, replay_table, tmp_path):
    from conceptengine.training.sam3 import load_training_records

    c = cfg(world, tmp_path / "o", replay_annotations=str(replay_table), replay_share=0.5)
    records, n_replay = load_training_records(c)
    replayed = set(pq.read_table(replay_table)["media_id"].to_pylist())
    assert n_replay == 3 and len(records) == 6  # 3 committed images, 3 of the 5 replay ones
    assert {r.media_id for r in records[3:]} <= replayed and not {r.media_id for r in records[:3]} & replayed
    again, _ = load_training_records(c)
    assert [r.media_id for r in again] == [r.media_id for r in records]  # resume sees the same records
    # Replay pairs follow max_negative_share like the committed ones (the replay set is 80% negative).
    inputs = load_sam3_inputs(world["init"])
    ds = Sam3TrainDataset(records, inputs, 32, max_nps_per_image=50, max_negative_share=0.5)
    for i in range(3, 6):
        item = ds[(i, 0)]
        assert int(item.is_negative.sum()) <= max(1, int((~item.is_negative).sum()))
    # Share 0 (or no replay at all) trains on the committed images only.
    assert load_training_records(cfg(world, tmp_path / "o", replay_annotations=str(replay_table)))[1] == 0


def test_spread_replay_gives_each_pass_over_the_committed_images_fresh_replay_ones(
    world, replay_table, tmp_path
):
    from conceptengine.training.sam3 import load_training_records

    # 3 committed images at share 0.25 want 1 replay image per pass; 20 steps of 2 make 10 passes over 4
    # images, and the 5-image replay set has a fresh image for 5 of them.
    kw = {"replay_annotations": str(replay_table), "replay_share": 0.25, "steps": 20}
    records, n_replay = load_training_records(cfg(world, tmp_path / "o", replay_spread=True, **kw))
    committed, replayed = records[:-n_replay], [r.media_id for r in records[-n_replay:]]
    assert len(committed) == 15 and len({r.media_id for r in committed}) == 3  # each committed image x5
    assert len(replayed) == len(set(replayed)) == 5  # every replay image once: 5x the distinct base data
    assert n_replay / len(records) == 0.25  # the share is what it was
    again, _ = load_training_records(cfg(world, tmp_path / "o", replay_spread=True, **kw))
    assert [r.media_id for r in again] == [r.media_id for r in records]  # resume sees the same records
    # Without spread one draw of 1 replay image sits beside the 3 committed ones.
    assert load_training_records(cfg(world, tmp_path / "o", replay_spread=False, **kw))[1] == 1
    # A run too short for a second pass does not repeat anything.
    short = load_training_records(cfg(world, tmp_path / "o", replay_spread=True, **(kw | {"steps": 2})))
    assert short[1] == 1 and len(short[0]) == 4


def test_freeze_replay_tokens_keeps_known_words_and_trains_the_new_ones(world, replay_table, tmp_path):
    from transformers import Sam3Model

    from conceptengine.training.sam3 import replay_token_ids

    tokenizer = load_sam3_inputs(world["init"]).tokenizer
    known = replay_token_ids(str(replay_table), tokenizer)
    phrases = sorted(set(world["table"]["noun_phrase"].to_pylist()))
    new = sorted({i for ids in tokenizer(phrases)["input_ids"] for i in ids} - set(known))
    assert known and new  # the committed pairs use words the replay data does not
    c = cfg(world, tmp_path / "o", replay_annotations=str(replay_table), replay_share=0.5, lr=1e-2)
    out = train_sam3(c.model_copy(update={"freeze_replay_tokens": True}))

    def table(path):
        return Sam3Model.from_pretrained(path).text_encoder.get_input_embeddings().weight.detach()

    before, after = table(world["init"]), table(out)
    # Known rows move only by AdamW's weight decay (lr x 1e-4 per step); new ones by the gradient.
    assert torch.allclose(after[known], before[known], rtol=1e-5, atol=1e-7)
    assert (after[new] - before[new]).abs().max() > 1e-3


def test_a_run_with_replay_records_how_many_images_it_replayed(world, replay_table, tmp_path):
    c = cfg(world, tmp_path / "out", steps=1, replay_annotations=str(replay_table), replay_share=0.25)
    summary = json.loads((Path(train_sam3(c)) / "training.json").read_text())
    assert summary["replay_images"] == 1 and summary["images"] == 4


def test_replay_config_errors_name_the_key(world, tmp_path):
    with pytest.raises(ConfigError, match=r"replay_share: Input should be less than 1"):
        load_train_config(_write(tmp_path, world, replay_annotations="x.parquet", replay_share=1.0))
    with pytest.raises(ConfigError, match=r"replay_share"):
        load_train_config(_write(tmp_path, world, replay_annotations="x.parquet", replay_share=-0.1))
    with pytest.raises(ValueError, match="replay_annotations is not set"):
        cfg(world, tmp_path / "o", replay_share=0.5)
    with pytest.raises(ValueError, match="freeze_replay_tokens is true but replay_annotations is not set"):
        cfg(world, tmp_path / "o", freeze_replay_tokens=True)
    missing = cfg(world, tmp_path / "o", replay_annotations=str(tmp_path / "nope.parquet"), replay_share=0.5)
    with pytest.raises(FileNotFoundError, match=r"replay_annotations path .*nope\.parquet does not exist"):
        train_sam3(missing)


# -- the operating point after training ------------------------------------------------------------------
def test_a_fine_tune_refits_its_presence_shift_on_base_data(tmp_path):
    """The shipped checkpoint, one step on a demo-style world, then the presence shift scored on the first
    3 images of the replay set: the best shift is recorded and is what the saved weights carry."""
    from conceptengine.model.presence_bias import presence_logit_bias
    from conceptengine.pipelines.demo import SHIPPED_SAM3
    from conceptengine.sim.oracle import Oracle
    from conceptengine.sim.render import STYLES
    from conceptengine.sim.world import build_world

    build_world(tmp_path / "world", n_train=5, n_gold=0, seed=31, image_size=192, style=STYLES["demo"])
    table = Oracle(tmp_path / "world").gold_annotations(split="train", nps_per_image=6, negative_share=0.5)
    pq.write_table(table, tmp_path / "base.parquet")
    common = {
        "init_checkpoint": str(SHIPPED_SAM3),
        "annotations": str(tmp_path / "base.parquet"),
        "replay_annotations": str(tmp_path / "base.parquet"),
        "steps": 1,
        "batch_size": 2,
        "max_nps_per_image": 4,
        "lr": 1e-5,
    }
    plain = train_sam3(TrainSam3Config(output_dir=str(tmp_path / "plain"), **common))
    fitted = train_sam3(
        TrainSam3Config(
            output_dir=str(tmp_path / "fitted"),
            presence_fit_images=3,
            presence_fit_offsets=[-3.0, 0.0, 3.0],
            **common,
        )
    )
    fit = json.loads((Path(fitted) / "training.json").read_text())["presence_fit"]
    scores = {float(o): s for o, s in fit["cgF1"].items()}
    assert fit["images"] == 3 and set(scores) == {-3.0, 0.0, 3.0}
    assert len({round(s, 6) for s in scores.values()}) > 1  # the shifts answer differently
    assert scores[fit["offset"]] == max(scores.values())
    assert json.loads((Path(plain) / "training.json").read_text())["presence_fit"] is None
    bias = [presence_logit_bias(Sam3Model.from_pretrained(d)) for d in (plain, fitted)]
    assert torch.allclose(bias[1], bias[0] + fit["offset"])


def test_the_presence_fit_needs_base_data(world, tmp_path):
    with pytest.raises(ValueError, match="presence_fit_images is 3 but replay_annotations is not set"):
        cfg(world, tmp_path / "o", presence_fit_images=3)
