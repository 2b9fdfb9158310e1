"""Verifier backend on vLLM, for GPU serving inside the verifier actor (`pip install conceptengine[vllm]`).

Scoring is one generated token per question with `allowed_token_ids` = the choice tokens and
`logprobs` = their number. The engine runs with `logprobs_mode="processed_logprobs"`, so the
returned log-probabilities are taken after the allowed-token mask: exactly the log-softmax over the
choice logits, i.e. the same numbers the transformers backend computes (up to GPU kernels). Prompts
are rendered with the checkpoint's own processor chat template, as the transformers backend does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from transformers import AutoProcessor

from conceptengine.verifiers.backend import chat_prompt, check_request, choice_token_ids
from conceptengine.verifiers.logprobs import choice_probs

INSTALL_HINT = (
    "the vllm verifier backend needs vLLM: pip install 'conceptengine[vllm]' (Linux with a CUDA GPU)"
)


class VLLMBackend:
    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        max_images_per_prompt: int = 2,
        enforce_eager: bool = False,
        version: str | None = None,
    ):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise ImportError(INSTALL_HINT) from exc

        self._sampling_params = SamplingParams
        self.processor = AutoProcessor.from_pretrained(model_path)
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            limit_mm_per_prompt={"image": max_images_per_prompt},
            enforce_eager=enforce_eager,
            logprobs_mode="processed_logprobs",  # logprobs after the allowed-token mask (see module doc)
        )
        self.version = version or model_path.rstrip("/").rsplit("/", 1)[-1]
        self._token_ids: dict[tuple[str, ...], list[int]] = {}

    def token_ids(self, choice_tokens: list[str]) -> list[int]:
        key = tuple(choice_tokens)
        if key not in self._token_ids:
            self._token_ids[key] = choice_token_ids(self.processor.tokenizer, choice_tokens)
        return self._token_ids[key]

    def render_prompt(self, n_images: int, prompt: str) -> str:
        return chat_prompt(self.processor, n_images, prompt)

    def score(
        self, views: list[list[Image.Image]], prompts: list[str], choice_tokens: list[str]
    ) -> np.ndarray:
        check_request(views, prompts, choice_tokens)
        ids = self.token_ids(choice_tokens)
        by_id = dict(zip(ids, choice_tokens, strict=True))
        params = self._sampling_params(
            max_tokens=1, temperature=0.0, logprobs=len(ids), allowed_token_ids=ids, detokenize=False
        )
        requests: list[dict[str, Any]] = []
        for v, p in zip(views, prompts, strict=True):
            req: dict[str, Any] = {"prompt": self.render_prompt(len(v), p)}
            if v:
                req["multi_modal_data"] = {"image": [im.convert("RGB") for im in v]}
            requests.append(req)
        outputs = self.llm.generate(requests, params, use_tqdm=False)  # vLLM batches and schedules them
        out = np.zeros((len(prompts), len(ids)), dtype=np.float32)
        for i, o in enumerate(outputs):
            step = o.outputs[0].logprobs[0]  # {token_id: Logprob} for the one generated position
            top = {by_id[t]: float(lp.logprob) for t, lp in step.items() if t in by_id}
            out[i] = choice_probs(top, choice_tokens, f"vLLM verifier {self.version}")
        return out
