"""MV and EV behind one small interface: render the paper's views, ask the backend, return probabilities.

Each verifier splits into `requests` (pure: views + prompts) and `score` (one backend call), so the
pipeline stage can pool the requests of many pairs and images into full backend batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from conceptengine.verifiers import choices, prompts, render
from conceptengine.verifiers.backend import VerifierBackend
from conceptengine.verifiers.grounded.backend import boxed_view, mask_views


@dataclass(frozen=True)
class Request:
    views: list[Image.Image]
    prompt: str


def _mask_fields(mask: Mapping | Sequence) -> tuple[str, Sequence[float]]:
    """Accepts a MASK-struct row (dict with rle, box_xyxy) or an (rle, box) pair."""
    if isinstance(mask, Mapping):
        try:
            return mask["rle"], mask["box_xyxy"]
        except KeyError as exc:
            raise ValueError(f"a mask needs 'rle' and 'box_xyxy' fields, missing {exc}") from None
    rle, box = mask
    return rle, box


class MaskVerifier:
    """MV: is this mask a good instance of the NP? -> probabilities over choices.MV, one row per mask."""

    choices = choices.MV

    def __init__(self, backend: VerifierBackend, view_size: int = 112):
        self.backend = backend
        self.view_size = view_size

    def requests(self, image: np.ndarray, noun_phrase: str, masks: Sequence) -> list[Request]:
        question = prompts.mv_prompt(noun_phrase)
        out = []
        for m in masks:
            rle, box = _mask_fields(m)
            out.append(Request(list(render.mv_views(image, rle, box, size=self.view_size)), question))
        return out

    def score_requests(self, reqs: list[Request]) -> np.ndarray:
        if not reqs:
            return np.zeros((0, len(self.choices)), dtype=np.float32)
        return self.backend.score(
            [r.views for r in reqs], [r.prompt for r in reqs], list(self.choices.letters)
        )

    def score(self, image: np.ndarray, noun_phrase: str, masks: Sequence) -> np.ndarray:
        """(n_masks, 5) probabilities, in mask order."""
        return self.score_requests(self.requests(image, noun_phrase, masks))


class GroundedMaskVerifier(MaskVerifier):
    """MV for a grounded scorer (grounded/backend.py): per mask its two crops, and the bare phrase."""

    def requests(self, image: np.ndarray, noun_phrase: str, masks: Sequence) -> list[Request]:

        size = self.backend.view_size  # type: ignore[attr-defined]
        return [Request(mask_views(image, *_mask_fields(m), size), noun_phrase) for m in masks]


def mask_verifier(backend: VerifierBackend, view_size: int = 112) -> MaskVerifier:
    """The MV that asks `backend` with what it reads: the paper's two views, drawn for an MLLM or as a
    grounded scorer's crops."""
    if getattr(backend, "task", None) == "mv":
        return GroundedMaskVerifier(backend, view_size=view_size)
    return MaskVerifier(backend, view_size=view_size)


class ExhaustivityVerifier:
    """EV: are all instances of the NP boxed? -> probabilities over choices.EV for one pair."""

    choices = choices.EV

    def __init__(self, backend: VerifierBackend, view_size: int = 112):
        self.backend = backend
        self.view_size = view_size

    def request(self, image: np.ndarray, noun_phrase: str, boxes: Sequence[Sequence[float]]) -> Request:
        view = render.ev_view(image, boxes, size=self.view_size)
        return Request([view], prompts.ev_prompt(noun_phrase, len(boxes)))

    def score_requests(self, reqs: list[Request]) -> np.ndarray:
        if not reqs:
            return np.zeros((0, len(self.choices)), dtype=np.float32)
        return self.backend.score(
            [r.views for r in reqs], [r.prompt for r in reqs], list(self.choices.letters)
        )

    def score(self, image: np.ndarray, noun_phrase: str, boxes: Sequence[Sequence[float]]) -> np.ndarray:
        """(6,) probabilities for the pair."""
        return self.score_requests([self.request(image, noun_phrase, boxes)])[0]

    @staticmethod
    def presence(probs: np.ndarray, n_boxes: int) -> float | None:
        """1 - P(Accept) when no box was proposed; undefined (None) otherwise, as in the paper."""
        if n_boxes:
            return None
        return float(choices.presence(probs))


class GroundedExhaustivityVerifier(ExhaustivityVerifier):
    """EV for a grounded scorer (grounded/backend.py): the image with the boxes filled in, the bare phrase."""

    def request(self, image: np.ndarray, noun_phrase: str, boxes: Sequence[Sequence[float]]) -> Request:

        return Request([boxed_view(image, boxes, self.backend.view_size)], noun_phrase)  # type: ignore[attr-defined]


def exhaustivity_verifier(backend: VerifierBackend, view_size: int = 112) -> ExhaustivityVerifier:
    """The EV that asks `backend` with what it reads: the paper's boxed view, or a grounded scorer's."""
    if getattr(backend, "task", None) == "ev":
        return GroundedExhaustivityVerifier(backend, view_size=view_size)
    return ExhaustivityVerifier(backend, view_size=view_size)
