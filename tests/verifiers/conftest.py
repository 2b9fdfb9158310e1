"""One tiny verifier per test session: building it trains a tokenizer and saves weights (~2 s)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = ["red square", "blue triangle", "striped circle", "star"]


@pytest.fixture(scope="session")
def tiny_verifier_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    from conceptengine.verifiers.tiny import build_tiny_verifier

    return build_tiny_verifier(str(tmp_path_factory.mktemp("tiny_verifier") / "v0001"), VOCAB, seed=0)


@pytest.fixture(scope="session")
def backend(tiny_verifier_path: str):
    from conceptengine.verifiers.transformers_backend import TransformersBackend

    return TransformersBackend(tiny_verifier_path, batch_size=3)
