"""The captioner interface: the only component of NP proposal that looks at images.

Positive NP candidates come from a captioner (in the paper, an MLLM describing the image). Anything
that maps a media to a list of noun phrases fits: the demo's oracle captioner (the rendered world's, wired in
by the demo pipeline), captions precomputed offline by a batch MLLM job (`PrecomputedCaptioner`), a live
image-text-to-text model (`conceptengine.verifiers.captioner`), or no captioner at all (`OntologyGuesses`: concepts drawn from the ontology, for a pool nobody has captioned).
A captioner's `origin` names where its candidates came from in the PAIRS table.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from conceptengine.engine.ids import stable_seed
from conceptengine.ontology.graph import ConceptGraph


@runtime_checkable
class Captioner(Protocol):
    def caption(self, media_id: str, uri: str | None = None) -> list[str]:
        """Noun phrases the captioner believes are present in the media (may be wrong or incomplete);
        `uri` is where the media was read from."""
        ...


class CaptionerFactory(Protocol):
    """Builds a captioner where NP proposal runs (once per actor: a captioning model loads there, never in the
    driver), given the run's ontology."""

    def __call__(self, *, graph: ConceptGraph) -> Captioner: ...


class OntologyGuesses:
    """No captioner: each image gets `per_image` concepts drawn from the ontology (seeded per media), for
    SAM 3 and the verifiers to ground or reject. Their origin is "ontology", not "caption"."""

    origin = "ontology"

    def __init__(self, noun_phrases: Sequence[str], per_image: int, seed: int = 0):
        if not noun_phrases:
            raise ValueError("OntologyGuesses: the ontology names no concept")
        self.noun_phrases, self.per_image, self.seed = list(noun_phrases), per_image, seed

    def caption(self, media_id: str, uri: str | None = None) -> list[str]:

        rng = np.random.default_rng(stable_seed(self.seed, "ontology-guesses", media_id))
        k = min(self.per_image, len(self.noun_phrases))
        return [self.noun_phrases[i] for i in sorted(rng.choice(len(self.noun_phrases), k, replace=False))]


class PrecomputedCaptioner:
    """Captions computed elsewhere (e.g. an offline MLLM job), keyed by what the job knew of each image: its
    media_id (the engine's content hash), its URI as the pool lists it, or its file name.

    A media with no entry has no captions (an empty list): the engine then proposes negatives only,
    which is what SA-Co does for images a captioner found nothing in.
    """

    def __init__(self, captions: Mapping[str, Sequence[str]]):
        self._captions = {str(k): [str(np) for np in v] for k, v in captions.items()}

    @classmethod
    def from_json(cls, path: str | Path) -> PrecomputedCaptioner:
        """Load `{"<media_id, URI or file name>": ["np", ...], ...}`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"captions file {path} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"captions file {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise ValueError(
                f"captions file {path} must map each image (media_id, URI or file name) to a list of noun phrases"
            )
        return cls(data)

    def caption(self, media_id: str, uri: str | None = None) -> list[str]:
        for key in (media_id, uri, posixpath.basename(uri) if uri else None):
            if key is not None and key in self._captions:
                return list(self._captions[key])
        return []
