"""An ontology's slots for the grounded scorers and what a phrase accepts in each."""

from __future__ import annotations

import numpy as np

from conceptengine.sim.taxonomy import shapes_graph
from conceptengine.verifiers.grounded.slots import ontology_slots, phrase_needs


def test_a_phrase_accepts_its_concepts_leaves_and_its_named_values_only() -> None:
    graph = shapes_graph()
    slots = ontology_slots(graph)
    assert [name for name, _ in slots] == ["leaf", "colour", "pattern"]
    leaves, colours, patterns = (values for _, values in slots)
    needs = phrase_needs(graph, "red polygon", slots)
    assert needs is not None and needs.shape == (len(leaves) + len(colours) + len(patterns),)
    leaf, colour, pattern = np.split(needs, np.cumsum([len(leaves), len(colours)]))
    assert {v for v, n in zip(leaves, leaf, strict=True) if n} == {
        v for v in leaves if graph.is_a(v, "polygon")
    }
    assert "square" in {v for v, n in zip(leaves, leaf, strict=True) if n} and leaf.sum() < len(leaves)
    assert colour.tolist() == [float(c == "red") for c in colours]
    assert pattern.tolist() == [1.0] * len(patterns)  # no pattern named: any
    disks = phrase_needs(graph, "disks", slots)  # a synonym, plural, answers like its concept
    assert disks is not None and disks[: len(leaves)].tolist() == [float(v == "circle") for v in leaves]
    assert phrase_needs(graph, "banana", slots) is None
