"""The oracle: hierarchy closure, synonyms, attributes, gold pairs; and the oracle captioner."""

from __future__ import annotations

from pathlib import Path

import pytest
from pycocotools import mask as mask_utils

from conceptengine.engine.tables import ANNOTATIONS
from conceptengine.sim import Oracle, OracleCaptioner, World

# Written out by hand, independently of the ontology code, to check hierarchy closure against.
POLYGON_LEAVES = {
    "equilateral_triangle", "right_triangle", "square", "rectangle", "diamond", "trapezoid",
    "parallelogram", "kite", "pentagon", "hexagon", "octagon",
}  # fmt: skip
ROUND_LEAVES = {"circle", "ellipse", "ring", "semicircle", "crescent"}


def _expected(world: World, media_id: str, leaves: set[str] | None = None, **attrs: str) -> list[str]:
    return [
        i["rle"]
        for i in world.record(media_id)["instances"]
        if (leaves is None or i["leaf"] in leaves) and all(i[k] == v for k, v in attrs.items())
    ]


def test_hierarchy_closure_and_attributes(world: World, oracle: Oracle) -> None:
    checked = 0
    for media_id in world.media_ids():
        assert oracle.instances(media_id, "shape") == _expected(world, media_id)
        assert oracle.instances(media_id, "polygon") == _expected(world, media_id, POLYGON_LEAVES)
        assert oracle.instances(media_id, "round shapes") == _expected(world, media_id, ROUND_LEAVES)
        assert oracle.instances(media_id, "red polygon") == _expected(
            world, media_id, POLYGON_LEAVES, colour="red"
        )
        assert oracle.instances(media_id, "Striped  BLUE object") == _expected(
            world, media_id, colour="blue", pattern="striped"
        )
        for inst in world.record(media_id)["instances"]:
            leaf_name = oracle.graph.node(inst["leaf"]).name
            assert inst["rle"] in oracle.instances(
                media_id, f"{inst['colour']} {inst['pattern']} {leaf_name}"
            )
            checked += 1
    assert checked > 100


def test_synonyms_resolve_like_their_concept(world: World, oracle: Oracle) -> None:
    for media_id in world.media_ids():
        assert oracle.instances(media_id, "disk") == oracle.instances(media_id, "circle")
        assert oracle.instances(media_id, "violet rhombus") == oracle.instances(media_id, "purple diamond")
        assert oracle.instances(media_id, "a plus sign") == oracle.instances(media_id, "cross")


def test_unparseable_np_and_unknown_media(world: World, oracle: Oracle) -> None:
    media_id = world.media_ids()[0]
    assert oracle.instances(media_id, "giraffe") == []
    assert oracle.instances(media_id, "red blue square") == []
    with pytest.raises(KeyError, match="not part of the rendered world"):
        oracle.instances("0" * 16, "square")
    assert oracle.media_size(media_id) == (128, 128)


def test_present_and_absent_nps_agree_with_instances(world: World, oracle: Oracle) -> None:
    for media_id in world.media_ids()[:10]:
        present = oracle.present_nps(media_id)
        assert all(oracle.instances(media_id, np_) for np_ in present)
        assert not any(oracle.instances(media_id, np_) for np_ in oracle.absent_nps(media_id)[::25])
        assert bool(present) == bool(world.record(media_id)["instances"])


def test_gold_annotations_are_sa_co_like(world: World, oracle: Oracle) -> None:
    gold = oracle.gold_annotations(nps_per_image=10, negative_share=0.6, seed=1)
    assert gold.schema.equals(ANNOTATIONS)
    rows = gold.to_pylist()
    assert {r["media_id"] for r in rows} == set(world.media_ids("gold"))
    negatives = [r for r in rows if r["is_negative"]]
    assert 0.55 <= len(negatives) / len(rows) <= 0.75
    for r in rows:
        assert r["provenance"] == "oracle" and r["round"] == 0 and r["is_exhaustive"]
        assert Path(r["uri"]).is_absolute() and Path(r["uri"]).is_file()
        assert [m["rle"] for m in r["masks"]] == oracle.instances(r["media_id"], r["noun_phrase"])
        assert r["is_negative"] == (not r["masks"])
        for m in r["masks"]:
            decoded = mask_utils.decode({"size": [r["height"], r["width"]], "counts": m["rle"].encode()})
            assert decoded.sum() > 0
    assert gold.equals(oracle.gold_annotations(nps_per_image=10, negative_share=0.6, seed=1))


def test_oracle_captioner_recall_and_noise(world: World, oracle: Oracle) -> None:
    media = world.media_ids()
    perfect = OracleCaptioner(oracle, recall=1.0, noise=0.0)
    assert all(perfect.caption(m) == oracle.present_nps(m) for m in media)
    assert all(OracleCaptioner(oracle, recall=0.0, noise=0.0).caption(m) == [] for m in media)

    noisy = OracleCaptioner(oracle, recall=0.5, noise=0.2, seed=3)
    n_present = n_right = n_wrong = 0
    for m in media:
        caps = noisy.caption(m)
        assert caps == noisy.caption(m)  # deterministic
        present = set(oracle.present_nps(m))
        n_present += len(present)
        n_right += sum(c in present for c in caps)
        n_wrong += sum(c not in present for c in caps)
    assert 0.45 < n_right / n_present < 0.55
    assert 0.15 < n_wrong / n_present < 0.25
    with pytest.raises(ValueError, match="recall"):
        OracleCaptioner(oracle, recall=1.5)
