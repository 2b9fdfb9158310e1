"""A captioner for the RENDERED domain that reads the oracle, with controllable recall and noise.

It stands in for the MLLM captioner of a real run, so the demo can dial how good captions are and
measure what that does to the engine. Its errors look like a real captioner's: most wrong NPs are
*confusions* (a sibling or cousin of something present: "rectangle" for a square), the rest are
unrelated concepts.
"""

from __future__ import annotations

import numpy as np

from conceptengine.engine import ids
from conceptengine.ontology.graph import ConceptGraph
from conceptengine.ontology.negatives import np_candidates
from conceptengine.sim.oracle import Oracle


class OracleCaptioner:
    """Implements `conceptengine.ontology.captioner.Captioner` from ground truth.

    recall: each present NP is returned with this probability.
    noise:  expected number of wrong NPs per present NP (each present NP adds one wrong NP with this
            probability), so wrong / returned ~= noise / (recall + noise).
    """

    def __init__(self, oracle: Oracle, recall: float = 0.7, noise: float = 0.1, seed: int = 0):
        if not 0.0 <= recall <= 1.0:
            raise ValueError(f"OracleCaptioner: recall must be in [0, 1], got {recall!r}")
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"OracleCaptioner: noise must be in [0, 1], got {noise!r}")
        self.oracle, self.recall, self.noise, self.seed = oracle, recall, noise, seed

    def caption(self, media_id: str, uri: str | None = None) -> list[str]:
        rng = np.random.default_rng(ids.stable_seed(self.seed, "caption", media_id))
        present = self.oracle.present_nps(media_id)
        kept = [np_ for np_ in present if rng.random() < self.recall]
        n_wrong = int(rng.binomial(len(present), self.noise)) if present else 0
        if not n_wrong:
            return kept
        absent = self.oracle.absent_nps(media_id)
        absent_set = set(absent)
        confusions = [
            c.noun_phrase
            for c in np_candidates(self.oracle.graph, present, rng)
            if c.noun_phrase in absent_set
        ]
        wrong = confusions[: (n_wrong + 1) // 2]
        rest = sorted(absent_set - set(wrong))
        wrong += [rest[i] for i in rng.choice(len(rest), min(len(rest), n_wrong - len(wrong)), replace=False)]
        return kept + wrong


def oracle_captioner(
    world_dir: str, recall: float, noise: float, seed: int, *, graph: ConceptGraph | None = None
) -> OracleCaptioner:
    """A `CaptionerFactory` for the world at `world_dir` (bind all but `graph`, which the world's own oracle
    already knows): picklable, so each NP-proposal actor builds its own."""
    return OracleCaptioner(Oracle(world_dir), recall, noise, seed)
