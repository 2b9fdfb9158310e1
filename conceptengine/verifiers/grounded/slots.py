"""An ontology's slots for the grounded scorers, and what a phrase accepts in each.

A slot is a question the scorers ask of an object, with a closed set of answers: which leaf concept it is,
then one slot per attribute kind (colour, pattern...). A phrase the ontology parses names one concept and at
most one value per attribute kind, so it accepts every leaf under its concept and, per attribute, the named
value or any value when it names none ("red polygon": every polygon leaf, red, any pattern).
"""

from __future__ import annotations

from typing import Any

import numpy as np

LEAF = "leaf"


def ontology_slots(graph: Any) -> list[list]:
    """The scorers' slots for a concept graph (ontology.graph.ConceptGraph): its leaf concepts, then each
    attribute kind's values."""
    return [
        [LEAF, graph.leaves()],
        *([k, list(graph.attribute_values(k))] for k in graph.attribute_kinds),
    ]


def phrase_needs(graph: Any, phrase: str, slots: list[list]) -> np.ndarray | None:
    """(sum of the slots' sizes,) 1.0 for each slot value the phrase accepts, 0.0 for the others, in the
    slots' order; None when the ontology cannot parse the phrase."""
    parsed = graph.resolve(phrase)
    if parsed is None:
        return None
    out: list[float] = []
    for name, values in slots:
        if name == LEAF:
            out += [float(graph.is_a(v, parsed.node_id)) for v in values]
        else:
            named = parsed.get(name)
            out += [float(named is None or named == v) for v in values]
    return np.asarray(out, dtype=np.float32)
