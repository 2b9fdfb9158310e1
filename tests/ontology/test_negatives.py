"""np_candidates: siblings, cousins and uncles of the positives, never something a positive entails."""

from __future__ import annotations

import numpy as np
import pytest

from conceptengine.ontology.graph import ConceptGraph
from conceptengine.ontology.negatives import NegativeCandidate, np_candidates


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_relations_keep_the_modifiers(zoo: ConceptGraph) -> None:
    cands = np_candidates(zoo, ["brown dog"], _rng())
    got = {(c.noun_phrase, c.relation) for c in cands}
    assert got == {
        ("brown cat", "sibling"), ("brown bear", "sibling"), ("brown polar bear", "sibling"),
        ("brown eagle", "cousin"), ("brown sparrow", "cousin"), ("brown salmon", "cousin"),
        ("brown bird", "uncle"), ("brown fish", "uncle"),
    }  # fmt: skip
    assert all(c.source == "brown dog" for c in cands)


def test_candidates_a_positive_entails_are_dropped(zoo: ConceptGraph) -> None:
    # "bird" is an uncle of dog and "mammal" an uncle of eagle, but an eagle is a bird and a dog is
    # a mammal: neither can be a negative next to both positives.
    nps = {c.noun_phrase for c in np_candidates(zoo, ["dog", "eagle"], _rng())}
    assert nps == {"cat", "bear", "polar bear", "sparrow", "salmon", "fish"}


def test_exclude_limit_and_unparseable_positives(zoo: ConceptGraph) -> None:
    nps = {c.noun_phrase for c in np_candidates(zoo, ["cat", "flying saucer"], _rng(), exclude=["Dog"])}
    assert "dog" not in nps and "bear" in nps
    assert len(np_candidates(zoo, ["cat"], _rng(), limit=2)) == 2
    assert np_candidates(zoo, ["flying saucer"], _rng()) == []
    assert {c.relation for c in np_candidates(zoo, ["cat"], _rng(), relations=("uncle",))} == {"uncle"}
    with pytest.raises(ValueError, match="nephew"):
        np_candidates(zoo, ["cat"], _rng(), relations=("nephew",))


def test_order_comes_from_the_rng_only(zoo: ConceptGraph) -> None:
    a = np_candidates(zoo, ["dog", "red car"], _rng(1))
    b = np_candidates(zoo, ["red car", "dog"], _rng(1))  # input order does not matter
    c = np_candidates(zoo, ["dog", "red car"], _rng(2))
    assert a == b
    assert set(a) == set(c) and a != c


def test_adversarial_filter_hook_runs_before_the_limit(zoo: ConceptGraph) -> None:
    seen: list[list[NegativeCandidate]] = []

    def siblings_only(cands: list[NegativeCandidate]) -> list[NegativeCandidate]:
        seen.append(cands)
        return [c for c in cands if c.relation == "sibling"]

    kept = np_candidates(zoo, ["dog"], _rng(), limit=2, keep=siblings_only)
    assert len(seen[0]) == 8  # the hook sees every candidate
    assert len(kept) == 2 and all(c.relation == "sibling" for c in kept)
