"""Concept graph, NP proposal and hard-negative candidates.

Importing this package registers the `propose_nps` stage.
"""

from conceptengine.ontology.captioner import Captioner, PrecomputedCaptioner
from conceptengine.ontology.graph import AttributeValue, ConceptGraph, Node, OntologyError, ParsedNP
from conceptengine.ontology.negatives import NegativeCandidate, is_implied, np_candidates
from conceptengine.ontology.np_proposal import ProposeNPs, ProposeNPsParams

__all__ = [
    "AttributeValue",
    "Captioner",
    "ConceptGraph",
    "NegativeCandidate",
    "Node",
    "OntologyError",
    "ParsedNP",
    "PrecomputedCaptioner",
    "ProposeNPs",
    "ProposeNPsParams",
    "is_implied",
    "np_candidates",
]
