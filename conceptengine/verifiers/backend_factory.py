"""Choosing a verifier backend: `verifier.backend: transformers | vllm | openai` and their settings.

The settings models live here, not in `config.py`, because the ai_verify stage validates the same
fields when it is built on a Ray actor; `config.py` embeds them, so YAML and stage params can never
disagree. vLLM, an optional extra, loads only when a vllm backend is made.
"""

from __future__ import annotations

from conceptengine.verifiers.backend import VerifierBackend
from conceptengine.verifiers.grounded.backend import GroundedBackend, grounded_task
from conceptengine.verifiers.openai_backend import OpenAIBackend
from conceptengine.verifiers.settings import BackendParams, VLLMConfig
from conceptengine.verifiers.transformers_backend import TransformersBackend
from conceptengine.verifiers.vllm_backend import VLLMBackend


def vllm_memory_share(v: VLLMConfig, gpu_share: float) -> float:
    """vLLM's gpu_memory_utilization: the configured value, else 90% of the actor's GPU share (whole
    GPUs or no share at all: vLLM's own 0.9)."""
    if v.gpu_memory_utilization is not None:
        return v.gpu_memory_utilization
    return round(0.9 * min(gpu_share, 1.0), 3) if gpu_share > 0 else 0.9


def make_backend(
    params: BackendParams, model: str, version: str | None = None, gpu_share: float = 0.0
) -> VerifierBackend:
    """Build the backend `params.backend` names for `model`: a checkpoint directory (or hub id) for
    transformers and vLLM, a served model name for openai. `gpu_share` is the stage's `num_gpus`."""
    if params.backend == "transformers":
        if grounded_task(model) is not None:  # a grounded MV or EV scorer (verifiers/grounded)
            return GroundedBackend(model, device=params.device, version=version)

        return TransformersBackend(
            model,
            device=params.device,
            dtype=params.dtype,
            batch_size=params.infer_batch_size,
            version=version,
        )
    if params.backend == "vllm":
        v = params.vllm
        return VLLMBackend(
            model,
            dtype=params.dtype,
            gpu_memory_utilization=vllm_memory_share(v, gpu_share),
            max_model_len=v.max_model_len,
            max_images_per_prompt=v.max_images_per_prompt,
            enforce_eager=v.enforce_eager,
            version=version,
        )
    if params.backend == "openai":
        o = params.openai
        return OpenAIBackend(
            o.base_url,
            model,
            api_key_env=o.api_key_env,
            max_concurrency=o.max_concurrency,
            timeout_s=o.timeout_s,
            max_retries=o.max_retries,
            top_logprobs=o.top_logprobs,
            backoff_s=o.backoff_s,
            max_backoff_s=o.max_backoff_s,
            version=version,
        )
    raise ValueError(f"unknown verifier backend {params.backend!r}; use transformers, vllm or openai")
