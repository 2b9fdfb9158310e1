"""The answer choices of the two AI verifiers, exactly as the SAM 3 paper names them.

Each choice is answered by one single-token letter, so a verifier's score is a softmax over the
next-token logits of those letters only: cheap (one forward pass, no generation) and calibratable.
Keeping names and letters in one place means prompts, backends, routing and human review can never
disagree on which column of a probability vector means what.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACCEPT = "Accept"


@dataclass(frozen=True)
class ChoiceSet:
    """An ordered list of choices; probability column i is `names[i]`, answered by `letters[i]`."""

    task: str
    names: tuple[str, ...]
    descriptions: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.descriptions):
            raise ValueError(
                f"{self.task}: {len(self.names)} choices but {len(self.descriptions)} descriptions"
            )
        if len(self.names) > 26:
            raise ValueError(f"{self.task}: at most 26 choices fit single-letter answers")

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(chr(ord("A") + i) for i in range(len(self.names)))

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"{name!r} is not a {self.task} choice; choices: {list(self.names)}") from None

    def prob(self, probs: np.ndarray, name: str) -> np.ndarray:
        """P(name) along the last axis; works for one vector (scalar out) or a stack of them."""
        probs = np.asarray(probs)
        if probs.shape[-1] != len(self):
            raise ValueError(f"{self.task} probabilities need {len(self)} columns, got shape {probs.shape}")
        return probs[..., self.index(name)]

    def argmax(self, probs: np.ndarray) -> str | list[str]:
        """The most probable choice name(s): what a verifier 'answers' when forced to pick."""
        probs = np.asarray(probs)
        idx = probs.argmax(axis=-1)
        if probs.ndim == 1:
            return self.names[int(idx)]
        return [self.names[int(i)] for i in idx.ravel()]


MV = ChoiceSet(
    task="mv",
    names=("Accept", "Accept as text", "Flag label", "Whole image", "Reject"),
    descriptions=(
        "the mask is a good, complete instance of the phrase",
        "the phrase is only visible as written text, and the mask covers that text",
        "the phrase itself is wrong, harmful or not a concept",
        "the phrase describes the whole image rather than an object",
        "the mask is wrong, partial, merged or not an instance of the phrase",
    ),
)

EV = ChoiceSet(
    task="ev",
    names=(
        "Accept",
        "Reject",
        "Reject but unseparated",
        "Flag label",
        "Whole image",
        "Ungroundable-vague-unsure",
    ),
    descriptions=(
        "every instance of the phrase is covered by its own box (or there is none and no box)",
        "some instance of the phrase has no box",
        "instances are missing but they cannot be separated from each other",
        "the phrase itself is wrong, harmful or not a concept",
        "the phrase describes the whole image rather than objects",
        "the phrase is too vague to ground, or the answer is unsure",
    ),
)


def p_accept(probs: np.ndarray, choices: ChoiceSet = MV) -> np.ndarray:
    """P(Accept): the score routing thresholds. Accept is column 0 of both choice sets."""
    return choices.prob(probs, ACCEPT)


def presence(ev_probs_no_boxes: np.ndarray) -> np.ndarray:
    """EV presence score = 1 - P(Accept | no boxes): 'accepting' an empty proposal means 'nothing here'."""
    return 1.0 - EV.prob(ev_probs_no_boxes, ACCEPT)
