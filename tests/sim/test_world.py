"""build_world / World.load: files on disk, idempotence, corrupt files, ground truth consistency."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from conceptengine.engine import ids, rle
from conceptengine.engine.tables import MEDIA
from conceptengine.sim import World, build_world
from conceptengine.sim.world import GROUND_TRUTH


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    build_world(tmp_path / "a", n_train=5, n_gold=2, seed=3, image_size=96, n_corrupt=3)
    build_world(tmp_path / "b", n_train=5, n_gold=2, seed=3, image_size=96, n_corrupt=3)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b
    assert {"ground_truth.parquet", "ontology.yaml", "README.txt"} <= set(a)
    build_world(tmp_path / "a", n_train=5, n_gold=2, seed=3, image_size=96, n_corrupt=3)  # again, in place
    assert _digest(tmp_path / "a") == b


def test_rebuild_smaller_removes_stale_images(tmp_path: Path) -> None:
    build_world(tmp_path, n_train=4, n_gold=1, seed=0, image_size=64, n_corrupt=2)
    world = build_world(tmp_path, n_train=2, n_gold=1, seed=0, image_size=64)
    names = sorted(p.name for p in world.images_dir.iterdir())
    assert names == ["gold-000000.png", "train-000000.png", "train-000001.png"]


def test_ground_truth_matches_the_image_files(world: World) -> None:
    table = pq.read_table(world.root / "ground_truth.parquet")
    assert table.schema.equals(GROUND_TRUTH)
    assert table.num_rows == 48
    assert table.column("split").to_pylist().count("gold") == 8
    for row in table.to_pylist():
        data = (world.images_dir / row["file_name"]).read_bytes()
        assert row["media_id"] == ids.media_id_for_bytes(data)
        assert Image.open(world.images_dir / row["file_name"]).size == (row["width"], row["height"])
        for inst in row["instances"]:
            mask = rle.decode(inst["rle"], row["height"], row["width"])
            assert mask.any()
            assert inst["box_xyxy"] == pytest.approx(rle.box_xyxy(inst["rle"], row["height"], row["width"]))


def test_corrupt_files_really_fail_to_decode(world: World) -> None:
    corrupt = world.corrupt_paths()
    assert len(corrupt) == 3
    for path in corrupt:
        with pytest.raises((OSError, SyntaxError, ValueError)), Image.open(path) as img:
            img.load()


def test_load_round_trip_and_media_table(world: World) -> None:
    again = World.load(world.root)
    assert again.ground_truth.equals(world.ground_truth)
    media = world.media_table()
    assert media.schema.equals(MEDIA)
    assert set(media.column("split").to_pylist()) == {"train", "gold"}
    assert all(Path(u).is_absolute() and Path(u).is_file() for u in media.column("uri").to_pylist())
    assert world.media_table("gold").num_rows == 8


def test_user_errors_have_clear_messages(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_train"):
        build_world(tmp_path, n_train=-1, n_gold=0, seed=0)
    with pytest.raises(ValueError, match="image_size"):
        build_world(tmp_path, n_train=1, n_gold=0, seed=0, image_size=8)
    with pytest.raises(FileNotFoundError, match="build_world"):
        World.load(tmp_path / "nowhere")
