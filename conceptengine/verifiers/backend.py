"""The one interface every verifier backend implements (transformers now; vLLM, OpenAI-compatible later).

A backend turns (images, prompt) requests into a probability vector over a fixed list of answer
tokens: the softmax of the next-token logits restricted to those tokens, as the SAM 3 paper scores
its verifiers. Everything above it (views, prompts, routing) is backend-agnostic.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image


@runtime_checkable
class VerifierBackend(Protocol):
    """Scores multiple-choice questions about images with an MLLM."""

    #: Identifies the weights in verdict rows (`ai:<version>`), so verdicts trace to a checkpoint.
    version: str

    def score(
        self, views: list[list[Image.Image]], prompts: list[str], choice_tokens: list[str]
    ) -> np.ndarray:
        """Return (N, len(choice_tokens)) float32 probabilities; row i answers prompts[i] about views[i].

        Rows sum to 1: softmax over the next-token logits of the choice tokens only, taken right
        after the assistant turn starts.
        """
        ...


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def check_request(views: list[list[Image.Image]], prompts: list[str], choice_tokens: list[str]) -> None:
    """Shared argument checks, so every backend rejects malformed requests with the same message."""
    if len(views) != len(prompts):
        raise ValueError(f"got {len(views)} view lists but {len(prompts)} prompts; need one per prompt")
    if len(choice_tokens) < 2:
        raise ValueError(f"need at least 2 choice tokens to score, got {choice_tokens!r}")
    if len(set(choice_tokens)) != len(choice_tokens):
        raise ValueError(f"choice tokens must be distinct, got {choice_tokens!r}")


def choice_token_ids(tokenizer, choice_tokens: list[str]) -> list[int]:
    """Each choice must be exactly one token of this tokenizer, or its probability is meaningless."""
    ids = []
    for tok in choice_tokens:
        enc = tokenizer.encode(tok, add_special_tokens=False)
        if len(enc) != 1:
            raise ValueError(
                f"choice token {tok!r} is {len(enc)} tokens for this verifier's tokenizer; "
                "choices must be single tokens"
            )
        ids.append(int(enc[0]))
    return ids


def chat_prompt(processor, n_images: int, prompt: str) -> str:
    """The model's own chat template with the images before the question; the answer token comes next."""
    content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": prompt}]
    messages = [{"role": "user", "content": content}]
    if getattr(processor, "chat_template", None):
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image_token = getattr(processor, "image_token", "<image>")
    return image_token * n_images + "\n" + prompt + "\n"
