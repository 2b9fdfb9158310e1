"""Hard-negative candidates from the concept graph (SAM 3 paper: siblings, cousins and uncles).

A hard negative is an NP that is *close* to something in the image but absent: "rectangle" on an
image of squares. The graph proposes them; nothing here looks at pixels or ground truth. The paper
then keeps only *adversarial* candidates, those for which SAM 3 predicts masks overlapping the
positive's masks; that filter needs a model and an image, so it plugs in through `keep` (a later
issue provides the SAM 3 implementation; see `CandidateFilter`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from conceptengine.engine.ids import normalize_np
from conceptengine.ontology.graph import ConceptGraph, ParsedNP

RELATIONS: tuple[str, ...] = ("sibling", "cousin", "uncle")


@dataclass(frozen=True)
class NegativeCandidate:
    """A candidate negative NP and why it was proposed (relation to which positive NP)."""

    noun_phrase: str
    node_id: str
    relation: str  # sibling | cousin | uncle
    source: str  # the positive NP it is related to


# The adversarial-filtering hook: receives the shuffled candidates and returns the ones to keep, in the
# order to prefer them. The SAM 3 version (later issue) binds the image and the positive's masks.
CandidateFilter = Callable[[list[NegativeCandidate]], Sequence[NegativeCandidate]]


def is_implied(graph: ConceptGraph, candidate: ParsedNP, positives: Iterable[ParsedNP]) -> bool:
    """True when a positive entails the candidate (hierarchy closure): 'red square' entails 'polygon'
    and 'red shape', so neither may ever be proposed as a negative next to it."""
    mods = set(candidate.modifiers)
    return any(graph.is_a(p.node_id, candidate.node_id) and mods <= set(p.modifiers) for p in positives)


def _related(graph: ConceptGraph, relation: str, node_id: str) -> list[str]:
    if relation == "sibling":
        return graph.siblings(node_id)
    if relation == "cousin":
        return graph.cousins(node_id)
    if relation == "uncle":
        return graph.uncles(node_id)
    raise ValueError(f"unknown hard-negative relation {relation!r}; use one of {RELATIONS}")


def np_candidates(
    graph: ConceptGraph,
    positives: Iterable[str],
    rng: np.random.Generator,
    *,
    relations: Sequence[str] = RELATIONS,
    exclude: Iterable[str] = (),
    limit: int | None = None,
    keep: CandidateFilter | None = None,
) -> list[NegativeCandidate]:
    """Hard-negative candidates for a set of positive NPs, shuffled by `rng`, at most `limit` of them.

    Each positive's concept is replaced by a sibling, cousin or uncle while its modifiers are kept
    ("red square" -> "red rectangle", "red triangle"), so the negative differs from the positive in
    exactly the concept. Candidates that a positive entails, that are positives themselves or that
    appear in `exclude` are dropped. Unparseable positives contribute nothing.
    """
    for rel in relations:
        if rel not in RELATIONS:
            raise ValueError(f"unknown hard-negative relation {rel!r}; use one of {RELATIONS}")
    pos_texts = sorted({normalize_np(p) for p in positives if normalize_np(p)})
    parsed = [(text, p) for text in pos_texts if (p := graph.resolve(text)) is not None]
    implied = set().union(*(graph.implied(p) for _, p in parsed))
    blocked = {normalize_np(x) for x in exclude} | set(pos_texts) | implied
    found: dict[str, NegativeCandidate] = {}
    for text, pos in parsed:
        for rel in relations:
            for node_id in _related(graph, rel, pos.node_id):
                cand = ParsedNP(node_id, pos.modifiers)
                cand_text = graph.canonical(cand)
                if cand_text in blocked or cand_text in found:
                    continue  # `blocked` holds everything a positive entails
                found[cand_text] = NegativeCandidate(cand_text, node_id, rel, text)
    ordered = [found[k] for k in sorted(found)]
    shuffled = [ordered[i] for i in rng.permutation(len(ordered))]
    if keep is not None:
        shuffled = list(keep(shuffled))
    return shuffled if limit is None else shuffled[: max(0, limit)]
