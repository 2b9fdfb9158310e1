from __future__ import annotations

import pytest

from conceptengine.ontology.graph import AttributeValue, ConceptGraph, Node
from conceptengine.sim import Oracle, World, build_world


@pytest.fixture()
def zoo() -> ConceptGraph:
    """A hand-built graph whose relations are easy to check by eye:

    animal ── mammal ── dog (puppy, hound), cat, bear, polar bear
           ├─ bird ──── eagle, sparrow
           └─ fish ──── salmon
    vehicle ── car
    """
    nodes = [
        Node("animal", "animal"),
        Node("mammal", "mammal", parent="animal"),
        Node("dog", "dog", ("puppy", "hound"), "mammal"),
        Node("cat", "cat", parent="mammal"),
        Node("bear", "bear", parent="mammal"),
        Node("polar_bear", "polar bear", parent="mammal"),
        Node("bird", "bird", parent="animal"),
        Node("eagle", "eagle", parent="bird"),
        Node("sparrow", "sparrow", parent="bird"),
        Node("fish", "fish", parent="animal"),
        Node("salmon", "salmon", parent="fish"),
        Node("vehicle", "vehicle"),
        Node("car", "car", ("automobile",), "vehicle"),
    ]
    attributes = {
        "size": [AttributeValue("size", "big", ("large",)), AttributeValue("size", "small")],
        "colour": [AttributeValue("colour", c) for c in ("brown", "white", "red")],
    }
    return ConceptGraph(nodes, attributes, name="zoo")


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"), n_train=60, n_gold=0, seed=5, image_size=96)


@pytest.fixture(scope="session")
def oracle(world: World) -> Oracle:
    return Oracle(world.root)
