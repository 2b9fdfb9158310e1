"""The verifiers' settings: which backend, its options, and the ai_verify stage's params.

Pydantic models only, so the run config can embed them (its `verifier:` section is `VerificationSettings`
plus the checkpoints) without loading a backend: YAML and stage params can never disagree.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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


class VerificationSettings(BackendParams):
    """How the verifiers run (backend fields from BackendParams): the run config's `verifier:` section embeds
    these, so their defaults are defined here only."""

    view_size: int = Field(112, ge=8)  # the side of the views the verifiers see (training uses the same)


class AIVerifyParams(VerificationSettings):
    """Params of the ai_verify stage: the settings plus the checkpoints the step resolves."""

    # A checkpoint directory (or hub id) for transformers / vllm; the served model name for openai.
    model_path: str
    ev_model_path: str | None = None  # EV's own checkpoint / served name; None = model_path for both
    version: str | None = None  # the rows' verifier_version; default: the backends' own versions
