"""The propose_nps stage on the rendered world: schema, SA-Co-like mix, determinism, quarantine, params."""

from __future__ import annotations

import json
from collections import Counter
from functools import partial
from pathlib import Path

import pyarrow as pa
import pytest

from conceptengine.engine import ids
from conceptengine.engine.stage import StageConfig, get_stage
from conceptengine.engine.tables import PAIRS
from conceptengine.ontology.np_proposal import ProposeNPs
from conceptengine.sim import Oracle, OracleCaptioner, World
from conceptengine.sim.captioner import oracle_captioner
from conceptengine.verifiers.captioner import ModelCaptioner

NEGATIVE = {"negative", "hard_negative"}


def _oracle_captioner(world: World, seed: object = 0) -> partial:
    return partial(oracle_captioner, str(world.root), 0.7, 0.1, seed)


def _stage(world: World, captioner: object = "oracle", **params: object) -> ProposeNPs:
    """The stage with the world's oracle captioner (seeded like the stage), another factory, or None."""
    if captioner == "oracle":
        captioner = _oracle_captioner(world, params.get("seed", 0))
    params = {"ontology_path": str(world.root / "ontology.yaml"), **params}
    stage = get_stage("propose_nps")(StageConfig(), captioner=captioner, **params)
    stage.setup()
    return stage  # type: ignore[return-value]


def test_output_is_exactly_pairs(world: World) -> None:
    media = world.media_table()
    out = _stage(world, round=2, seed=9)(media)
    assert out.schema.equals(PAIRS)
    graph = world.graph
    for row in out.to_pylist():
        assert row["pair_id"] == ids.pair_id(row["media_id"], row["noun_phrase"])
        assert row["round"] == 2 and row["origin"] in {"caption", "ontology", "negative", "hard_negative"}
        assert graph.resolve(row["noun_phrase"]).node_id == row["node_id"]
    assert len(set(out.column("pair_id").to_pylist())) == out.num_rows  # no pair twice
    assert set(out.column("media_id").to_pylist()) == set(media.column("media_id").to_pylist())


@pytest.mark.parametrize(("share", "hard"), [(0.85, 0.5), (0.6, 0.0), (0.9, 1.0)])
def test_negative_share_close_to_target(world: World, share: float, hard: float) -> None:
    out = _stage(world, negative_share=share, hard_negative_share=hard, max_nps_per_image=24)(
        world.media_table()
    )
    origins = Counter(out.column("origin").to_pylist())
    negatives = origins["negative"] + origins["hard_negative"]
    assert abs(negatives / out.num_rows - share) < 0.03, origins
    assert abs(origins["hard_negative"] / negatives - hard) < 0.1, origins
    per_image = Counter(out.column("media_id").to_pylist())
    assert max(per_image.values()) <= 24


def test_negatives_come_from_captions_not_ground_truth(world: World, oracle: Oracle, tmp_path: Path) -> None:
    """Given the same captions the stage proposes the same pairs: it never looks at the oracle."""
    captioner = OracleCaptioner(oracle, recall=0.7, noise=0.1, seed=4)
    captions = {m: captioner.caption(m) for m in world.media_ids()}
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    mix = {
        "seed": 4,
        "negative_share": 0.85,
        "max_nps_per_image": 20,
    }  # enough negatives to find present ones
    from_world = _stage(world, **mix)(world.media_table())
    from_file = _stage(world, captioner=None, captions_path=str(tmp_path / "captions.json"), **mix)(
        world.media_table()
    )
    assert from_world.equals(from_file)

    graph = world.graph
    rows = from_world.to_pylist()
    truly_present = 0
    for row in rows:
        caps = [graph.resolve(c) for c in captions[row["media_id"]]]
        entailed = set().union(*(graph.implied(c) for c in caps if c))
        if row["origin"] in NEGATIVE:
            assert row["noun_phrase"] not in entailed
            truly_present += bool(oracle.instances(row["media_id"], row["noun_phrase"]))
        if row["origin"] == "hard_negative":
            node = row["node_id"]
            related = {n for c in caps if c for n in graph.siblings(c.node_id) + graph.cousins(c.node_id)
                       + graph.uncles(c.node_id)}  # fmt: skip
            assert node in related
    n_neg = sum(r["origin"] in NEGATIVE for r in rows)
    # Real life: a few "negatives" are present (the engine cannot know); the verifiers catch those.
    assert 0 < truly_present < 0.2 * n_neg


def test_row_order_does_not_change_results_and_quarantined_media_are_skipped(world: World) -> None:
    media = world.media_table()
    stage = _stage(world, seed=1)
    forward = stage(media)
    backward = stage(media.take(list(range(media.num_rows - 1, -1, -1))))
    key = ["media_id", "noun_phrase"]
    assert forward.sort_by([(k, "ascending") for k in key]).equals(
        backward.sort_by([(k, "ascending") for k in key])
    )

    errors = [None] * media.num_rows
    errors[0] = "corrupt: cannot decode PNG"
    bad = media.set_column(media.schema.get_field_index("error"), "error", pa.array(errors, pa.string()))
    out = stage(bad)
    assert media.column("media_id")[0].as_py() not in set(out.column("media_id").to_pylist())
    assert (
        out.num_rows
        == forward.num_rows
        - Counter(forward.column("media_id").to_pylist())[media.column("media_id")[0].as_py()]
    )


def test_adversarial_filter_hook(world: World) -> None:
    stage = _stage(world, hard_negative_share=1.0)
    calls: list[str] = []

    def drop_all(media_id: str, cands: list) -> list:
        calls.append(media_id)
        return []

    stage.adversarial_filter = drop_all
    out = stage(world.media_table().slice(0, 5))
    assert len(calls) == 5
    assert "hard_negative" not in set(out.column("origin").to_pylist())
    assert "negative" in set(out.column("origin").to_pylist())  # the budget is filled with random ones


def test_bad_params_name_what_to_fix(world: World, tmp_path: Path) -> None:
    base = {"ontology_path": str(world.root / "ontology.yaml"), "captioner": _oracle_captioner(world)}
    with pytest.raises(ValueError, match="negative_share"):
        ProposeNPs(StageConfig(), **{**base, "negative_share": 1.0})
    with pytest.raises(ValueError, match="max_nps_per_images"):
        ProposeNPs(StageConfig(), **{**base, "max_nps_per_images": 3})
    with pytest.raises(FileNotFoundError, match="ontology_path"):
        ProposeNPs(StageConfig(), **{**base, "ontology_path": str(tmp_path / "none.yaml")})
    with pytest.raises(ValueError, match="needs exactly one captioner"):
        ProposeNPs(StageConfig(), ontology_path=base["ontology_path"])
    with pytest.raises(KeyError, match="needs columns"):
        _stage(world)(world.media_table().drop_columns(["error"]))


def test_focus_concepts_take_more_of_the_positive_slots(world: World) -> None:
    media = world.media_table()
    graph = world.graph
    focus = graph.resolve("hexagon").node_id

    def focus_positives(out: pa.Table) -> int:
        return sum(
            1
            for row in out.to_pylist()
            if row["origin"] in {"caption", "ontology"}
            and (row["node_id"] == focus or focus in graph.ancestors(row["node_id"]))
        )

    plain = _stage(world, seed=3)(media)
    focused = _stage(world, seed=3, focus_concepts=["hexagon"], focus_weight=20.0)(media)
    assert focus_positives(focused) >= 2 * max(1, focus_positives(plain)), (plain, focused)
    # Only the choice of positives moves: the pair count and the negative mix stay as configured.
    assert focused.num_rows == plain.num_rows
    with pytest.raises(ValueError, match="focus_concepts: 'unicorn' is not a concept"):
        _stage(world, focus_concepts=["unicorn"])


def test_without_a_captioner_candidates_are_drawn_from_the_ontology(world: World) -> None:
    media = world.media_table()
    out = _stage(world, captioner=None, ontology_guesses=True, negative_share=0.5, max_nps_per_image=8)(media)
    origins = Counter(out.column("origin").to_pylist())
    assert origins["ontology"] > 0 and origins["caption"] == 0  # guesses are not labelled as captions
    assert origins["negative"] + origins["hard_negative"] > 0
    again = _stage(world, captioner=None, ontology_guesses=True, negative_share=0.5, max_nps_per_image=8)(
        media
    )
    assert again.equals(out)  # seeded per media


def test_a_captioner_model_describes_each_image_and_its_phrases_become_candidates(
    world: World, tmp_path: Path
) -> None:
    from conceptengine.pipelines.demo import ontology_vocabulary
    from conceptengine.verifiers.tiny import build_tiny_verifier

    # A real image-text-to-text model (random weights, so its descriptions are word salad over its vocabulary).
    model = build_tiny_verifier(str(tmp_path / "captioner"), ontology_vocabulary(world.graph), seed=0)
    stage = _stage(world, captioner=partial(ModelCaptioner, model))
    media = world.media_table().slice(0, 2)
    out = stage(media)
    assert out.schema.equals(PAIRS) and out.num_rows > 0
    captioner = stage.captioner
    assert (
        isinstance(captioner.last_text, str) and captioner.last_text
    )  # what the model said of the last image
    last = media.column("media_id").to_pylist()[-1]
    said = set(world.graph.noun_phrases_in(captioner.last_text))
    caption_nps = {
        r["noun_phrase"] for r in out.to_pylist() if r["media_id"] == last and r["origin"] == "caption"
    }
    assert caption_nps <= said
