"""Choosing a verifier backend: `verifier.backend: transformers | vllm | openai` and their settings.

The settings models live here, not in `config.py`, because the ai_verify stage validates the same
fields when it is built on a Ray actor; `config.py` embeds them, so YAML and stage params can never
disagree. vLLM, an optional extra, loads only when a vllm backend is made.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from conceptengine.verifiers.backend import VerifierBackend
from conceptengine.verifiers.grounded.backend import GroundedBackend, grounded_task
from conceptengine.verifiers.openai_backend import OpenAIBackend
from conceptengine.verifiers.transformers_backend import TransformersBackend
from conceptengine.verifiers.vllm_backend import VLLMBackend

BackendName = Literal["transformers", "vllm", "openai"]


class OpenAIConfig(BaseModel):
    """An OpenAI-compatible server with logprobs (vLLM `serve`, `conceptengine verifier serve`, ...)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str | None = None  # the served model name for MV (GET {base_url}/models lists them)
    ev_model: str | None = None  # the served model name for EV; None = `model` for both
    api_key_env: str | None = None  # NAME of the environment variable holding the key, never the key
    max_concurrency: int = Field(8, ge=1)  # requests in flight per verifier actor
    timeout_s: float = Field(60.0, gt=0)  # per request
    max_retries: int = Field(4, ge=0)  # on 429, 5xx, timeouts and connection errors
    top_logprobs: int = Field(20, ge=1)  # OpenAI caps it at 20; vLLM at its --max-logprobs
    backoff_s: float = Field(0.5, gt=0)
    max_backoff_s: float = Field(30.0, gt=0)


class VLLMConfig(BaseModel):
    """vLLM in the verifier actor's own process (the `vllm` extra, a CUDA GPU)."""

    model_config = ConfigDict(extra="forbid")

    # Share of the GPU's memory vLLM may take. None: 0.9 x the stage's num_gpus, so an actor given half a
    # GPU leaves the other half to whatever Ray packs beside it (vLLM otherwise grabs 90% of the card).
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=128)
    max_images_per_prompt: int = Field(2, ge=1)  # MV sends two views
    enforce_eager: bool = False  # skip CUDA graph capture: faster start, slower steady state


class BackendParams(BaseModel):
    """What `make_backend` needs besides the model: the ai_verify stage's params extend this."""

    model_config = ConfigDict(extra="forbid")

    backend: BackendName = "transformers"
    device: str = "cpu"
    dtype: str = "auto"
    infer_batch_size: int = Field(16, ge=1)
    openai: OpenAIConfig = OpenAIConfig()
    vllm: VLLMConfig = VLLMConfig()


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
