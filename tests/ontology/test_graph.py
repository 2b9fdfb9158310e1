"""ConceptGraph: relations, NP parsing, YAML round trip and clear errors for broken files."""

from __future__ import annotations

from pathlib import Path

import pytest

from conceptengine.ontology.graph import ConceptGraph, OntologyError, ParsedNP


def test_relations(zoo: ConceptGraph) -> None:
    assert zoo.roots() == ["animal", "vehicle"]
    assert zoo.ancestors("dog") == ["mammal", "animal"]
    assert zoo.descendants("animal") == [
        "mammal", "dog", "cat", "bear", "polar_bear", "bird", "eagle", "sparrow", "fish", "salmon",
    ]  # fmt: skip
    assert zoo.siblings("dog") == ["cat", "bear", "polar_bear"]
    assert zoo.uncles("dog") == ["bird", "fish"]
    assert zoo.cousins("dog") == ["eagle", "sparrow", "salmon"]
    assert zoo.siblings("animal") == [] and zoo.uncles("mammal") == [] and zoo.cousins("mammal") == []
    assert zoo.leaves("bird") == ["eagle", "sparrow"]
    assert set(zoo.leaves()) == {"dog", "cat", "bear", "polar_bear", "eagle", "sparrow", "salmon", "car"}
    assert zoo.is_a("dog", "animal") and zoo.is_a("dog", "dog") and not zoo.is_a("animal", "dog")
    with pytest.raises(KeyError, match="unicorn"):
        zoo.ancestors("unicorn")


def test_resolve(zoo: ConceptGraph) -> None:
    assert zoo.resolve("dog") == ParsedNP("dog")
    assert zoo.resolve("The  BIG brown Puppies") == ParsedNP("dog", (("size", "big"), ("colour", "brown")))
    # Modifier order does not matter, synonyms of modifiers resolve, the canonical text is stable.
    parsed = zoo.resolve("brown large hound")
    assert parsed == ParsedNP("dog", (("size", "big"), ("colour", "brown")))
    assert zoo.canonical(parsed) == "big brown dog"
    # The longest concept name wins: "polar" is not a modifier, "polar bear" is a concept.
    assert zoo.resolve("white polar bear") == ParsedNP("polar_bear", (("colour", "white"),))
    assert zoo.resolve("small automobile") == ParsedNP("car", (("size", "small"),))
    for bad in ("unicorn", "brown", "brown white dog", "dog brown", "fast car", ""):
        assert zoo.resolve(bad) is None, bad


def test_noun_phrases_and_implied(zoo: ConceptGraph) -> None:
    nps = zoo.noun_phrases()
    assert len(nps) == len(set(nps)) == len(zoo) * (1 + 2) * (1 + 3)
    assert all(zoo.resolve(np_) is not None for np_ in nps)
    implied = zoo.implied(zoo.resolve("big brown dog"))
    assert {"dog", "mammal", "animal", "brown animal", "big mammal", "big brown dog"} <= implied
    assert "cat" not in implied and "white dog" not in implied and len(implied) == 3 * 4


def test_yaml_round_trip(zoo: ConceptGraph, tmp_path: Path) -> None:
    zoo.to_yaml(tmp_path / "zoo.yaml")
    again = ConceptGraph.from_yaml(tmp_path / "zoo.yaml")
    assert again.to_dict() == zoo.to_dict()
    assert again.resolve("large hound") == zoo.resolve("big dog")


@pytest.mark.parametrize(
    ("text", "node", "problem"),
    [
        ("concepts:\n- {id: a}\n- {id: b, parent: nope}\n", "b", "parent 'nope' is not defined"),
        ("concepts:\n- {id: a}\n- {id: a}\n", "a", "defined twice"),
        ("concepts:\n- {id: a, parent: b}\n- {id: b, parent: a}\n", "a", "loops back"),
        ("concepts:\n- {id: a, synonyms: [x]}\n- {id: b, name: x}\n", "b", "already used by node 'a'"),
        ("concepts:\n- {id: a, parnet: b}\n", "a", "unknown keys"),
        ("concepts:\n- {id: a, synonyms: x}\n", "a", "must be a list"),
        ("concepts:\n- {name: a}\n", "a", "has no 'id'"),
    ],
)
def test_broken_file_names_file_and_node(tmp_path: Path, text: str, node: str, problem: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(OntologyError) as err:
        ConceptGraph.from_yaml(path)
    message = str(err.value)
    assert str(path) in message and f"node '{node}'" in message and problem in message


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        ConceptGraph.from_yaml(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("concepts: [\n")
    with pytest.raises(OntologyError, match="not valid YAML"):
        ConceptGraph.from_yaml(tmp_path / "bad.yaml")
    (tmp_path / "empty.yaml").write_text("name: x\n")
    with pytest.raises(OntologyError, match="'concepts' must be a non-empty list"):
        ConceptGraph.from_yaml(tmp_path / "empty.yaml")


def test_subtrees_take_each_named_concept_and_everything_below_it(zoo: ConceptGraph) -> None:
    assert zoo.subtrees(["mammal", "eagle"], "x") == {"mammal", "dog", "cat", "bear", "polar_bear", "eagle"}
    assert zoo.subtrees(["puppy"], "x") == {"dog"}  # synonyms resolve to their node
    with pytest.raises(OntologyError, match="gold.report_concepts: 'unicorn' is not a concept"):
        zoo.subtrees(["unicorn"], "gold.report_concepts")


def test_noun_phrases_in_a_caption_take_the_longest_span_the_ontology_parses(zoo: ConceptGraph) -> None:
    text = "Two big brown dogs chase a polar bear past a car; a Salmon jumps. No unicorn."
    assert zoo.noun_phrases_in(text) == ["big brown dog", "polar bear", "car", "salmon"]
    assert zoo.noun_phrases_in("") == []
