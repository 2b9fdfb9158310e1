"""The renderer: deterministic, occlusion-correct visible masks, crowds, scale range, a rich ontology."""

from __future__ import annotations

import numpy as np
import pytest

from conceptengine.sim.render import MIN_VISIBLE_PIXELS, rasterize, render_scene
from conceptengine.sim.shapes import OUTLINES
from conceptengine.sim.taxonomy import PALETTE, PATTERNS, shapes_graph


def test_same_seed_same_scene_and_different_seed_different_scene() -> None:
    a, b, c = render_scene(11), render_scene(11), render_scene(12)
    assert np.array_equal(a.image, b.image)
    assert [i.leaf for i in a.instances] == [i.leaf for i in b.instances]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a.instances, b.instances, strict=True))
    assert not np.array_equal(a.image, c.image)


def test_visible_masks_are_disjoint_and_inside_their_drawn_objects() -> None:
    saw_partial_occlusion = saw_dropped = False
    for seed in range(40):
        scene = render_scene(seed, image_size=128)
        h, w = scene.image.shape[:2]
        coverage = np.zeros((h, w), dtype=np.int32)
        for inst, obj in zip(scene.instances, scene.objects, strict=True):
            drawn = rasterize(obj, h, w)
            assert not (inst.mask & ~drawn).any(), "a visible mask leaks outside its object"
            assert inst.mask.sum() >= MIN_VISIBLE_PIXELS
            saw_partial_occlusion |= bool(inst.mask.sum() < drawn.sum())
            coverage += inst.mask
        assert coverage.max(initial=0) <= 1, "two instances claim the same pixel"
        saw_dropped |= scene.dropped > 0
    assert saw_partial_occlusion and saw_dropped


def test_crowd_scenes_have_30_plus_instances() -> None:
    for seed in range(5):
        scene = render_scene(seed, crowd=True)
        assert scene.crowd and len(scene.instances) >= 30


def test_scale_spans_tiny_to_large() -> None:
    areas = [int(i.mask.sum()) for s in range(30) for i in render_scene(s).instances]
    assert min(areas) < 100 and max(areas) > 2500


def test_ontology_has_20_plus_renderable_leaves_and_matching_attributes() -> None:
    graph = shapes_graph()
    leaves = graph.leaves()
    assert len(leaves) >= 20
    assert set(leaves) == set(OUTLINES)
    assert graph.attribute_values("colour") == tuple(PALETTE)
    assert graph.attribute_values("pattern") == tuple(PATTERNS)
    assert len(graph) > len(leaves)  # parents exist


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_solid_objects_show_their_colour(seed: int) -> None:
    scene = render_scene(seed)
    for inst in scene.instances:
        if inst.pattern == "solid" and inst.mask.sum() >= 30:
            mean = scene.image[inst.mask].mean(axis=0)
            assert np.abs(mean - np.asarray(PALETTE[inst.colour])).max() < 35, inst
