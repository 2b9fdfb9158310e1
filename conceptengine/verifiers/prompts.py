"""Multiple-choice prompts for the MV and EV verifiers.

Prompts are plain text: where the images go is the backend's business (a chat template for real
MLLMs, image placeholders for the tiny one), so the same prompt serves transformers, vLLM and
OpenAI-compatible servers. The answer is always one letter, so the score is read from one forward
pass. The noun phrase is quoted verbatim; quotes inside it are normalised so they cannot close it.
"""

from __future__ import annotations

from conceptengine.verifiers.choices import EV, MV, ChoiceSet

ANSWER_INSTRUCTION = "Answer with the letter of one option."


def _np(noun_phrase: str) -> str:
    text = " ".join(str(noun_phrase).split()).replace('"', "'")
    if not text:
        raise ValueError("a verifier prompt needs a non-empty noun phrase")
    return text


def options(choices: ChoiceSet) -> str:
    return "\n".join(
        f"{letter}. {name}: {desc}"
        for letter, name, desc in zip(choices.letters, choices.names, choices.descriptions)
    )


def mv_prompt(noun_phrase: str) -> str:
    """MV question for one mask; the two images are the context crop (box drawn) and the mask close-up."""
    np_ = _np(noun_phrase)
    return (
        "The first image shows an object with a box drawn around it. "
        "The second image zooms in on it with its "
        f'mask tinted. Is the mask a good instance of "{np_}"?\n'
        f"{options(MV)}\n{ANSWER_INSTRUCTION}"
    )


def ev_prompt(noun_phrase: str, n_boxes: int) -> str:
    """EV question; with no boxes, Accept means 'there is no such object', hence presence = 1 - P(Accept)."""
    np_ = _np(noun_phrase)
    if n_boxes < 0:
        raise ValueError(f"n_boxes must be >= 0, got {n_boxes}")
    if n_boxes == 0:
        shown = f'No box was proposed for "{np_}".'
    else:
        shown = f'The image shows {n_boxes} proposed box{"es" if n_boxes != 1 else ""} for "{np_}".'
    return (
        f'{shown} Is every instance of "{np_}" in the image covered by its own box?\n'
        f"{options(EV)}\n{ANSWER_INSTRUCTION}"
    )


def corpus(vocabulary: list[str]) -> list[str]:
    """Every kind of text the verifiers will be asked, for training a small tokenizer offline."""
    texts = [mv_prompt("object"), ev_prompt("object", 0), ev_prompt("object", 1), ev_prompt("object", 2)]
    for word in vocabulary:
        if str(word).strip():
            texts += [mv_prompt(word), ev_prompt(word, 0), ev_prompt(word, 3)]
    return texts
