"""The shifted look: a second rendered domain that changes appearance only, never the default images."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.ndimage

from conceptengine.sim.render import (
    DEFAULT_LOOK,
    DEMO_STYLE,
    FULL_STYLE,
    SHIFTED_LOOK,
    Look,
    rasterize,
    render_scene,
)
from conceptengine.sim.taxonomy import PALETTE
from conceptengine.sim.world import (
    DOMAIN,
    GT_FILE,
    SHIFTED_DOMAIN,
    World,
    build_world,
    is_shifted,
    world_spec,
)

# sha256 of render_scene(seed, 128, style=...).image.tobytes() as rendered before looks existed. The
# shipped checkpoints were trained on these images: a change here means the default look changed.
GOLDEN = {
    ("full", 0): "30d8f459a0ad8cf52789f024c3e8ffdb8b702a98e86cbf53444ea82175c61fe9",
    ("demo", 3): "8072bda3b6f7ea75cf421b7805c6f4667aacf8690cc6c82e8f442e9d5e6a7bcb",
}


def _sha(image: np.ndarray) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


@pytest.mark.parametrize(("style", "seed"), list(GOLDEN))
def test_default_look_renders_the_images_it_always_did(style: str, seed: int) -> None:
    chosen = {"full": FULL_STYLE, "demo": DEMO_STYLE}[style]
    assert _sha(render_scene(seed, 128, style=chosen).image) == GOLDEN[(style, seed)]
    assert _sha(render_scene(seed, 128, style=chosen, look=DEFAULT_LOOK).image) == GOLDEN[(style, seed)]
    assert _sha(render_scene(seed, 128, style=chosen, look=Look()).image) == GOLDEN[(style, seed)]


def _background_stats(look: Look) -> tuple[float, float]:
    """Mean chroma (max - min channel) and mean spatial spread of brightness of background pixels."""
    chroma, spread = [], []
    for seed in range(20):
        scene = render_scene(seed, 96, look=look)
        bg = np.ones(scene.image.shape[:2], dtype=bool)
        for inst in scene.instances:
            bg &= ~inst.mask
        px = scene.image[bg].astype(np.float64)
        chroma.append((px.max(axis=1) - px.min(axis=1)).mean())
        spread.append(px.mean(axis=1).std())
    return float(np.mean(chroma)), float(np.mean(spread))


def test_shifted_look_has_clearly_different_backgrounds() -> None:
    chroma, spread = _background_stats(DEFAULT_LOOK)
    shifted_chroma, _ = _background_stats(SHIFTED_LOOK)
    _, in_focus_spread = _background_stats(replace(SHIFTED_LOOK, blur=(0.0, 0.0)))
    assert shifted_chroma > 1.5 * chroma  # coloured gradients vs. low-saturation grey mottle
    assert in_focus_spread > 1.5 * spread  # stripes and an uneven light vs. a flat mottle


def _sharpness(look: Look) -> float:
    """Mean absolute difference of horizontally adjacent pixels: edges, stripes and grain."""
    diffs = [np.abs(np.diff(render_scene(seed, 128, look=look).image.astype(np.float64), axis=1)).mean()
             for seed in range(10)]  # fmt: skip
    return float(np.mean(diffs))


def test_shifted_look_is_out_of_focus() -> None:
    # The blur is applied before the sensor noise, so grain stays sharp: the drop is in edges and stripes.
    assert _sharpness(SHIFTED_LOOK) < 0.7 * _sharpness(replace(SHIFTED_LOOK, blur=(0.0, 0.0)))


def test_blur_outside_its_range_is_refused() -> None:
    with pytest.raises(ValueError, match="Look.blur"):
        Look(blur=(2.0, 1.0))


@pytest.mark.parametrize("style", [FULL_STYLE, DEMO_STYLE])
def test_shifted_look_keeps_objects_and_masks_exact(style) -> None:
    """Same seed, same objects and the same exact visible masks: the look only repaints pixels."""
    for seed in range(12):
        plain = render_scene(seed, 128, style=style)
        shifted = render_scene(seed, 128, style=style, look=SHIFTED_LOOK)
        assert not np.array_equal(plain.image, shifted.image)
        assert [(i.leaf, i.colour, i.pattern) for i in shifted.instances] == [
            (i.leaf, i.colour, i.pattern) for i in plain.instances
        ]
        for a, b, obj in zip(plain.instances, shifted.instances, shifted.objects, strict=True):
            assert np.array_equal(a.mask, b.mask)
            assert not (b.mask & ~rasterize(obj, 128, 128)).any()


def test_shifted_colours_keep_their_names() -> None:
    """Under the shifted light a solid object's colour is still nearest to its own palette colour.

    Read where a person reads it, inside the outline: the blur mixes a rim of background into the edge
    pixels, which would turn a thin black bolt on green stripes green on average."""
    names = list(PALETTE)
    palette = np.asarray([PALETTE[n] for n in names], dtype=np.float64)
    checked = 0
    for seed in range(60):
        scene = render_scene(seed, 128, style=DEMO_STYLE, look=SHIFTED_LOOK)
        for inst in scene.instances:
            core = scipy.ndimage.binary_erosion(inst.mask, iterations=3)
            if inst.pattern == "solid" and core.sum() >= 30:
                mean = scene.image[core].mean(axis=0)
                assert names[int(np.linalg.norm(palette - mean, axis=1).argmin())] == inst.colour, inst
                checked += 1
    assert checked > 40


def test_radius_scale_changes_object_sizes() -> None:
    small = Look(name="small", radius_scale=0.5)
    areas = [int(i.mask.sum()) for s in range(20) for i in render_scene(s, 128, crowd=False).instances]
    small_areas = [
        int(i.mask.sum()) for s in range(20) for i in render_scene(s, 128, crowd=False, look=small).instances
    ]
    assert np.median(small_areas) < 0.6 * np.median(areas)


def test_bad_looks_are_refused() -> None:
    with pytest.raises(ValueError, match="contrast"):
        Look(contrast=(0.9, 0.8))
    with pytest.raises(ValueError, match="temperature"):
        Look(temperature=2.0)
    with pytest.raises(ValueError, match="radius_scale"):
        Look(radius_scale=0.0)


def test_shifted_share_is_about_right_deterministic_and_nested() -> None:
    n = 4000
    at = {share: [is_shifted(3, "train", i, share) for i in range(n)] for share in (0.0, 0.25, 0.5, 1.0)}
    assert not any(at[0.0]) and all(at[1.0])
    for share in (0.25, 0.5):  # evenly spread: every prefix holds the share to within a few images
        for first in (10, 40, 160, n):
            assert abs(sum(at[share][:first]) - share * first) <= 3, (share, first)
    assert at[0.5] == [is_shifted(3, "train", i, 0.5) for i in range(n)]
    assert all(b for a, b in zip(at[0.25], at[0.5], strict=True) if a)  # a larger share only adds images
    assert at[0.5] != [is_shifted(4, "train", i, 0.5) for i in range(n)]  # the seed matters


def _digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "images").iterdir())}


def test_world_with_a_shifted_share_records_domains_and_keeps_the_other_images(tmp_path: Path) -> None:
    plain = build_world(tmp_path / "plain", n_train=16, n_gold=8, seed=2, image_size=64, n_corrupt=1)
    mixed = build_world(
        tmp_path / "mixed", n_train=16, n_gold=8, seed=2, image_size=64, n_corrupt=1, shifted_share=0.5
    )
    assert set(plain.ground_truth["domain"].to_pylist()) == {DOMAIN}
    a, b = _digests(plain.root), _digests(mixed.root)
    rows = mixed.ground_truth.to_pylist()
    shifted = {r["file_name"] for r in rows if r["domain"] == SHIFTED_DOMAIN}
    assert 0 < len(shifted) < len(rows)
    index = {r["file_name"]: int(r["file_name"][-10:-4]) for r in rows}
    assert {r["file_name"] for r in rows if is_shifted(2, r["split"], index[r["file_name"]], 0.5)} == shifted
    for name in index:  # corrupt-000 is cut from the first image, whichever look that has
        assert (a[name] == b[name]) == (name not in shifted), name
    # The media table carries each image's domain; instances of a shifted image are those of the plain one.
    media = mixed.media_table()
    domain_of = dict(zip(media["media_id"].to_pylist(), media["domain"].to_pylist(), strict=True))
    assert {domain_of[r["media_id"]] for r in rows} == {DOMAIN, SHIFTED_DOMAIN}
    assert all(domain_of[r["media_id"]] == r["domain"] for r in rows)
    plain_rows = {r["file_name"]: r for r in plain.ground_truth.to_pylist()}
    for r in rows:
        same = plain_rows[r["file_name"]]["instances"]
        assert [i["rle"] for i in r["instances"]] == [i["rle"] for i in same]
    assert mixed.spec == world_spec(16, 8, 2, 64, 1, shifted_share=0.5)
    assert plain.spec == world_spec(16, 8, 2, 64, 1) != mixed.spec


def test_world_without_a_domain_column_still_loads(tmp_path: Path) -> None:
    world = build_world(tmp_path, n_train=2, n_gold=1, seed=0, image_size=48)
    old = world.ground_truth.drop_columns(["domain"])
    pq.write_table(old, tmp_path / GT_FILE)
    (tmp_path / "world.json").unlink()
    again = World.load(tmp_path)
    assert again.ground_truth["domain"].to_pylist() == [DOMAIN] * 3
    assert set(again.media_table()["domain"].to_pylist()) == {DOMAIN}
    assert again.spec is None


def test_bad_shifted_share_is_refused(tmp_path: Path) -> None:
    for bad in (-0.1, 1.5, "half", True):
        with pytest.raises(ValueError, match="shifted_share"):
            build_world(tmp_path, n_train=1, n_gold=0, seed=0, image_size=48, shifted_share=bad)
