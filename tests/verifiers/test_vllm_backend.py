"""vLLM backend on a GPU: the same choice probabilities as the transformers backend on the same GPU.

Skipped without CUDA or without the `vllm` extra (`pip install 'conceptengine[vllm]'`).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from conceptengine.verifiers import choices

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs the vllm extra"),
]


def test_vllm_matches_the_transformers_backend(tiny_verifier_path: str) -> None:
    from conceptengine.verifiers.transformers_backend import TransformersBackend
    from conceptengine.verifiers.vllm_backend import VLLMBackend

    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)) for _ in range(3)]
    views, qs = [imgs[:2], imgs[2:], imgs[1:2]], ["Is this a red square?", "star", "blue triangle"]
    letters = list(choices.MV.letters)
    vllm_backend = VLLMBackend(
        tiny_verifier_path, dtype="float32", gpu_memory_utilization=0.3, enforce_eager=True
    )
    got = vllm_backend.score(views, qs, letters)
    want = TransformersBackend(tiny_verifier_path, device="cuda", dtype="float32").score(views, qs, letters)
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, want, atol=2e-3)  # different GPU kernels, same model
