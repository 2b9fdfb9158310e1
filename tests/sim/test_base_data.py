"""The shipped demo SAM 3's training data (sim/base_data.py) and the replay set the demo draws from it."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from conceptengine.engine import ids
from conceptengine.sim import Oracle, build_world
from conceptengine.sim.base_data import (
    PAIR_SEED,
    PAIRS_PER_IMAGE,
    WORLD_SEED,
    build_replay_set,
    held_out_nps,
    training_pairs,
)
from conceptengine.sim.render import STYLES


def _rows(table) -> list[tuple]:
    return sorted(
        (r["media_id"], r["noun_phrase"], r["is_negative"], tuple(m["rle"] for m in r["masks"]))
        for r in table.to_pylist()
    )


def test_the_replay_set_is_the_first_images_of_the_checkpoints_world_with_its_pairs(tmp_path: Path) -> None:
    # The world as scripts/train_demo_sam3.py builds it (there with 1,200 train and 80 gold images).
    full = build_world(tmp_path / "full", 7, 2, seed=WORLD_SEED, image_size=192, style=STYLES["demo"])
    pairs = build_replay_set(tmp_path / "replay", 4)
    first = [full.record(m) for m in full.media_ids("train")][:4]
    assert [r["file_name"] for r in first] == [f"train-{i:06d}.png" for i in range(4)]
    first_ids = [r["media_id"] for r in first]
    replay = pq.read_table(pairs)
    assert sorted(set(replay["media_id"].to_pylist())) == sorted(first_ids)
    trained = training_pairs(Oracle(full.root), nps_per_image=PAIRS_PER_IMAGE, seed=PAIR_SEED)
    assert _rows(replay) == [r for r in _rows(trained) if r[0] in first_ids]
    # The pairs read like any ANNOTATIONS table: their images exist, no held-out concept is named.
    assert all(Path(u).is_file() for u in replay["uri"].to_pylist())
    named = {ids.normalize_np(n) for n in replay["noun_phrase"].to_pylist()}
    assert not named & held_out_nps(full.graph)
    assert 0 < sum(replay["is_negative"].to_pylist()) < replay.num_rows


def test_the_replay_set_is_built_once(tmp_path: Path) -> None:
    pairs = build_replay_set(tmp_path / "replay", 2)
    stamp = pairs.stat().st_mtime_ns
    assert build_replay_set(tmp_path / "replay", 2) == pairs and pairs.stat().st_mtime_ns == stamp
    bigger = pq.read_table(build_replay_set(tmp_path / "replay", 3))
    assert len(set(bigger["media_id"].to_pylist())) == 3
