"""Stage `propose_nps`: which noun phrases to ask about, per image (first step of every round).

Positive candidates come from the captioner (origin "caption") and from the ontology around each
caption concept: its parent, children and synonyms (origin "ontology"). Negatives are concepts the
engine believes absent: hard ones from siblings / cousins / uncles of the captions (origin
"hard_negative") and random ones from the whole ontology (origin "negative"). Only the captioner
looks at the image; the stage never asks ground truth, so some "negatives" are really present and
some "positives" absent. Catching that is the verifiers' and reviewers' job, as in SA-Co.

Focus concepts (`focus_concepts`, e.g. a domain the model does not know yet) weigh `focus_weight` times
more in the draw of positive candidates, so a round spends its few positive slots where the dataset is
thin; nothing else about the mix changes.

The mix is mostly negatives (SA-Co/HQ: 88.5% of image-NP pairs): per image, up to
`round(max_nps_per_image * (1 - negative_share))` positives, then on average
`negative_share / (1 - negative_share)` negatives per positive, so the share holds over the pool.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conceptengine.engine import ids
from conceptengine.engine.stage import Stage, StageConfig, register
from conceptengine.engine.tables import MEDIA, PAIRS
from conceptengine.ontology.captioner import (
    Captioner,
    CaptionerFactory,
    OntologyGuesses,
    PrecomputedCaptioner,
)
from conceptengine.ontology.graph import ConceptGraph, ParsedNP
from conceptengine.ontology.negatives import CandidateFilter, NegativeCandidate, np_candidates

log = logging.getLogger(__name__)

# Captions are what the captioner actually saw; ontology expansions are guesses around them.
_CAPTION_WEIGHT, _EXPANSION_WEIGHT = 2.0, 1.0


class NPProposalSettings(BaseModel):
    """The mix of noun phrases proposed per image: the run config's `ontology:` section embeds these, so their
    defaults are defined here only."""

    model_config = ConfigDict(extra="forbid")

    # Share of an image's proposed NPs that are negative candidates. SA-Co/HQ ends ~88% negative, and the
    # committed data does even at 0.5 (many positive candidates do not ground). At 0.85 a demo round of 80
    # images committed ~76 masks, at 0.5 ~260: the positives are what a fine-tune learns from.
    negative_share: float = Field(0.5, ge=0.0, lt=1.0)
    hard_negative_share: float = Field(0.5, ge=0.0, le=1.0)
    max_nps_per_image: int = Field(12, ge=1)
    # A domain to expand into: positive candidates naming these concepts (or their descendants) are drawn
    # focus_weight times more often. `conceptengine demo` focuses on the concepts its SAM 3 never saw.
    focus_concepts: list[str] = []
    focus_weight: float = Field(8.0, ge=1.0)


class ProposeNPsParams(NPProposalSettings):
    """Parameters of `propose_nps`: the settings plus what the step resolves for the round."""

    ontology_path: str
    captions_path: str | None = None  # or: precomputed captions, {"media_id, URI or file name": ["np", ...]}
    ontology_guesses: bool = False  # or: no captioner, concepts drawn from the ontology (OntologyGuesses)
    round: int = Field(0, ge=0)
    seed: int = 0


def _stochastic_round(x: float, rng: np.random.Generator) -> int:
    """Round so that the expectation is exact: 5.67 -> 6 two times in three, 5 otherwise."""
    low = math.floor(x)
    return low + int(rng.random() < x - low)


def expand(graph: ConceptGraph, parsed: ParsedNP) -> list[tuple[str, str]]:
    """(NP, node_id) around a caption concept, modifiers kept: its parent, children and synonyms."""
    out = []
    parent = graph.parent(parsed.node_id)
    if parent is not None:
        out.append((graph.np_text(parent, parsed.modifiers), parent))
    for child in graph.children(parsed.node_id):
        out.append((graph.np_text(child, parsed.modifiers), child))
    for synonym in graph.node(parsed.node_id).synonyms:
        out.append((graph.np_text(parsed.node_id, parsed.modifiers, head=synonym), parsed.node_id))
    return out


@register
class ProposeNPs(Stage):
    """MEDIA rows in, PAIRS rows out (one per image-NP pair). Quarantined media (error set) are skipped."""

    name: ClassVar[str] = "propose_nps"
    input_columns: ClassVar[tuple[str, ...]] = tuple(MEDIA.names)
    output_columns: ClassVar[tuple[str, ...]] = tuple(PAIRS.names)

    def __init__(self, cfg: StageConfig, captioner: CaptionerFactory | None = None, **params: Any):
        super().__init__(cfg, **params)
        try:
            self.p = ProposeNPsParams(**params)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"stage 'propose_nps' params: {problems}") from None
        if not Path(self.p.ontology_path).is_file():
            raise FileNotFoundError(
                f"stage 'propose_nps': ontology_path {self.p.ontology_path} does not exist"
            )
        sources = (captioner is not None) + (self.p.captions_path is not None) + self.p.ontology_guesses
        if sources != 1:
            raise ValueError(
                "stage 'propose_nps' needs exactly one captioner: a captioner factory (a model that captions "
                "each image, the demo's oracle captioner), params.captions_path (precomputed captions JSON) or "
                "params.ontology_guesses (none: concepts from the ontology)"
            )
        self.make_captioner = captioner
        self.captioner: Captioner | None = None
        # Hook for adversarial hard-negative filtering (SAM 3 paper): called with (media_id, candidates)
        # and returns the candidates to keep, best first. None keeps every ontology candidate.
        self.adversarial_filter: Any = None
        self.graph: ConceptGraph | None = None
        self._universe: list[tuple[str, str]] = []  # every (NP, node_id) the ontology can express
        self._focus: set[str] = set()  # node ids of focus_concepts and all their descendants
        self.failures: list[tuple[str, str]] = []  # (media_id, why) for rows the captioner failed on

    def setup(self) -> None:
        self.graph = ConceptGraph.from_yaml(self.p.ontology_path)
        self._universe = [(t, self.graph.resolve(t).node_id) for t in self.graph.noun_phrases()]  # type: ignore[union-attr]
        self._focus = self.graph.subtrees(self.p.focus_concepts, "ontology.focus_concepts")
        if self.make_captioner is not None:
            self.captioner = self.make_captioner(graph=self.graph)
        elif self.p.ontology_guesses:
            per_image = max(1, round(self.p.max_nps_per_image * (1 - self.p.negative_share)))
            self.captioner = OntologyGuesses([t for t, _ in self._universe], per_image, self.p.seed)
        else:
            self.captioner = PrecomputedCaptioner.from_json(self.p.captions_path or "")

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.graph is None:
            self.setup()
        self.check_input(batch)
        rows: list[dict] = []
        for media in batch.select(list(self.input_columns)).to_pylist():
            if media["error"] is not None:
                continue  # quarantined upstream; the media table keeps its error
            try:
                captions = self.captioner.caption(media["media_id"], media["uri"])  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - any captioner failure: one bad row never ends the run; logged and counted
                log.warning("propose_nps: captioner failed on media %s: %s", media["media_id"], exc)
                self.failures.append((media["media_id"], f"{type(exc).__name__}: {exc}"))
                continue
            for np_text, node_id, origin in self.propose(media["media_id"], captions):
                rows.append(
                    {
                        "pair_id": ids.pair_id(media["media_id"], np_text),
                        "media_id": media["media_id"],
                        "uri": media["uri"],
                        "width": media["width"],
                        "height": media["height"],
                        "noun_phrase": np_text,
                        "node_id": node_id,
                        "origin": origin,
                        "round": self.p.round,
                    }
                )
        return pa.Table.from_pylist(rows, schema=PAIRS)

    def _boost(self, node_id: str | None) -> float:
        return self.p.focus_weight if node_id in self._focus else 1.0

    def propose(self, media_id: str, captions: list[str]) -> list[tuple[str, str | None, str]]:
        """(noun_phrase, node_id, origin) for one media; deterministic in (seed, round, media_id)."""
        assert self.graph is not None, "call setup() first"
        graph, p = self.graph, self.p
        rng = np.random.default_rng(ids.stable_seed(p.seed, "propose_nps", str(p.round), media_id))
        caps: dict[str, str | None] = {}
        parsed_caps: list[ParsedNP] = []
        for raw in captions:
            text = ids.normalize_np(raw)
            if not text or text in caps:
                continue
            parsed = graph.resolve(text)
            caps[text] = parsed.node_id if parsed else None  # free text the ontology lacks stays a caption
            if parsed:
                parsed_caps.append(parsed)
        expansions: dict[str, str] = {}
        for parsed in parsed_caps:
            for text, node_id in expand(graph, parsed):
                if text not in caps:
                    expansions.setdefault(text, node_id)

        origin = getattr(self.captioner, "origin", "caption")
        pool = [(t, n, origin, _CAPTION_WEIGHT * self._boost(n)) for t, n in caps.items()]
        pool += [(t, n, "ontology", _EXPANSION_WEIGHT * self._boost(n)) for t, n in expansions.items()]
        pos_slots = max(1, round(p.max_nps_per_image * (1 - p.negative_share)))
        n_pos = min(pos_slots, len(pool))
        chosen: list[tuple[str, str | None, str]] = []
        if n_pos:
            weights = np.array([w for *_, w in pool])
            picks = rng.choice(len(pool), size=n_pos, replace=False, p=weights / weights.sum())
            chosen = [pool[i][:3] for i in sorted(picks)]

        ratio = p.negative_share / (1 - p.negative_share)
        n_neg = min(_stochastic_round(max(n_pos, 1) * ratio, rng), p.max_nps_per_image - n_pos)
        n_hard = _stochastic_round(n_neg * p.hard_negative_share, rng)
        known_positive = set(caps) | set(expansions) | set().union(*(graph.implied(c) for c in parsed_caps))
        keep: CandidateFilter | None = (
            partial(self.adversarial_filter, media_id) if self.adversarial_filter is not None else None
        )
        hard: list[NegativeCandidate] = np_candidates(
            graph, list(caps), rng, exclude=known_positive, limit=n_hard, keep=keep
        )
        negatives = [(c.noun_phrase, c.node_id, "hard_negative") for c in hard]
        taken = known_positive | {c.noun_phrase for c in hard}
        for i in rng.permutation(len(self._universe)):
            if len(negatives) >= n_neg:
                break
            text, node_id = self._universe[int(i)]
            if text in taken:
                continue  # includes all a caption entails: "shape" next to "red square" is no negative
            taken.add(text)
            negatives.append((text, node_id, "negative"))
        return chosen + negatives
