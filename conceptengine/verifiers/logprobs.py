"""Choice probabilities from the top-K log-probabilities a server returns for the next token.

A server that reports `logprobs` gives log-softmax values over its whole vocabulary, so renormalising
the choice tokens' values among themselves is exactly the softmax over the choice logits that the
in-process backend computes (log-softmax only shifts every logit by the same constant). The catch is
that a server returns only its top K tokens: a choice token outside them has no value. Its true
log-probability is at most the smallest one returned (it ranked below all of them), so that value is
an upper bound; we use the bound minus `margin` nats as the estimate, which keeps such a choice
clearly less likely than anything seen without inventing a precise number. Ask for a K that covers
the choices (our own server and vLLM accept large K; OpenAI caps it at 20) where exactness matters.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from conceptengine.verifiers.backend import softmax

DEFAULT_MISSING_MARGIN = 1.0


class MissingChoicesError(ValueError):
    """None of the answer tokens came back: the model is not answering with the choice letters."""


def choice_probs(
    top_logprobs: Mapping[str, float],
    choice_tokens: list[str],
    source: str,
    margin: float = DEFAULT_MISSING_MARGIN,
) -> np.ndarray:
    """Probability vector over `choice_tokens` from one position's {token: logprob} map.

    `source` names the server / model in the error raised when no choice token is present at all,
    since then there is nothing to renormalise and the prompt or the model is the thing to fix.
    """
    if not top_logprobs:
        raise MissingChoicesError(f"{source} returned no top_logprobs for the answer token")
    present = [top_logprobs.get(tok) for tok in choice_tokens]
    if all(v is None for v in present):
        shown = sorted(top_logprobs, key=top_logprobs.get, reverse=True)[:10]
        raise MissingChoicesError(
            f"{source}: none of the choice tokens {choice_tokens} is among the {len(top_logprobs)} "
            f"most likely next tokens (got {shown}); the model does not answer with the choice letters "
            "(check its chat template and prompt, or ask for more top_logprobs)"
        )
    floor = min(top_logprobs.values()) - margin
    logits = np.array([floor if v is None else v for v in present], dtype=np.float64)
    return softmax(logits).astype(np.float32)


def top_logprobs_map(entries: list[Mapping]) -> dict[str, float]:
    """OpenAI's `top_logprobs` list -> {token: logprob}; the more likely entry wins a duplicate.

    Two vocabulary entries can decode to the same text (e.g. byte-fallback pieces); matching on text is
    all the API allows, and the more likely one is the model's reading of that text.
    """
    out: dict[str, float] = {}
    for e in entries:
        tok, lp = e.get("token"), e.get("logprob")
        if tok is None or lp is None:
            raise ValueError(f"a top_logprobs entry needs 'token' and 'logprob', got {dict(e)!r}")
        if tok not in out or float(lp) > out[tok]:
            out[tok] = float(lp)
    return out
