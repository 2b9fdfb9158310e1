"""Verifier backend for any OpenAI-compatible chat server that returns logprobs (vLLM, SGLang, TGI,
`conceptengine verifier serve`, hosted APIs).

One request per question: the views as PNG data URLs, then the prompt; `max_tokens: 1`,
`temperature: 0`, `logprobs` with `top_logprobs: K`. The answer token's top-K log-probabilities are
renormalised over the choice tokens (see `logprobs.py`), which equals the in-process backend's
softmax over the choice logits whenever all choices are among the K. Requests run concurrently up to
`max_concurrency`, each with a timeout, retried with backoff on overload (see `retry.py`).
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
from PIL import Image

from conceptengine.verifiers.backend import check_request
from conceptengine.verifiers.data_url import encode_png
from conceptengine.verifiers.logprobs import DEFAULT_MISSING_MARGIN, choice_probs, top_logprobs_map
from conceptengine.verifiers.retry import RetryPolicy, ServerError, post_json


class OpenAIBackend:
    """`score` is synchronous (stages call it from Ray actors); `ascore` is the same for async callers."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        top_logprobs: int = 20,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        missing_margin: float = DEFAULT_MISSING_MARGIN,
        version: str | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"verifier base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError(
                "the OpenAI-compatible verifier backend needs the served model name (openai.model)"
            )
        for name, value in (("max_concurrency", max_concurrency), ("top_logprobs", top_logprobs)):
            if value < 1:
                raise ValueError(f"verifier openai.{name} must be >= 1, got {value}")
        if timeout_s <= 0:
            raise ValueError(f"verifier openai.timeout_s must be > 0, got {timeout_s}")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.top_logprobs = top_logprobs
        self.missing_margin = missing_margin
        self.policy = RetryPolicy(max_retries=max_retries, backoff_s=backoff_s, max_backoff_s=max_backoff_s)
        self.headers = _auth_headers(api_key_env)
        self.version = version or model
        self.what = f"verifier server {self.base_url} (model {model!r})"

    def payload(self, views: list[Image.Image], prompt: str) -> dict[str, Any]:
        """Images first, then the question: the order the in-process backend's chat template uses."""
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": encode_png(im)}} for im in views
        ]
        content.append({"type": "text", "text": prompt})
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }

    def probs(self, answer: dict[str, Any], choice_tokens: list[str]) -> np.ndarray:
        try:
            first = answer["choices"][0]["logprobs"]["content"][0]
            entries = list(first["top_logprobs"])
        except (KeyError, IndexError, TypeError):
            raise ServerError(
                f"{self.what}: the answer has no choices[0].logprobs.content[0].top_logprobs; the server "
                "must support chat logprobs (got keys "
                f"{sorted(answer) if isinstance(answer, dict) else type(answer).__name__})"
            ) from None
        if "token" in first and "logprob" in first:
            entries.append(first)  # the sampled token, when a server leaves it out of its own top list
        return choice_probs(top_logprobs_map(entries), choice_tokens, self.what, self.missing_margin)

    async def ascore(
        self, views: list[list[Image.Image]], prompts: list[str], choice_tokens: list[str]
    ) -> np.ndarray:
        check_request(views, prompts, choice_tokens)
        out = np.zeros((len(prompts), len(choice_tokens)), dtype=np.float32)
        if not prompts:
            return out
        semaphore = asyncio.Semaphore(self.max_concurrency)
        limits = httpx.Limits(
            max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
        )

        async def one(i: int, client: httpx.AsyncClient) -> None:
            answer = await post_json(
                client, self.url, self.payload(views[i], prompts[i]), semaphore, self.policy, self.what
            )
            out[i] = self.probs(answer, choice_tokens)

        async with httpx.AsyncClient(timeout=self.timeout_s, headers=self.headers, limits=limits) as client:
            try:
                async with asyncio.TaskGroup() as group:  # the first failure cancels the rest
                    for i in range(len(prompts)):
                        group.create_task(one(i, client))
            except ExceptionGroup as eg:
                raise _first(eg) from None
        return out

    def score(
        self, views: list[list[Image.Image]], prompts: list[str], choice_tokens: list[str]
    ) -> np.ndarray:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case, a sync Ray actor or a script: no loop in this thread
            return asyncio.run(self.ascore(views, prompts, choice_tokens))
        # Inside a running loop (an async actor, a notebook) asyncio.run would refuse: use a private
        # loop on a helper thread and block this caller, which asked for a synchronous answer.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self.ascore(views, prompts, choice_tokens)).result()


def _auth_headers(api_key_env: str | None) -> dict[str, str]:
    """The key is read from the environment named in the config, so configs (and run.json) never hold it."""
    if not api_key_env:
        return {}
    key = os.environ.get(api_key_env, "")
    if not key:
        raise ValueError(
            f"verifier openai.api_key_env is {api_key_env!r} but that environment variable is not set "
            "(on a Ray cluster, set it in the workers' runtime_env)"
        )
    return {"Authorization": f"Bearer {key}"}


def _first(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
