import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = ["red square", "blue triangle", "striped circle", "polygon", "green star"]


@pytest.fixture(scope="session")
def tiny_sam3(tmp_path_factory) -> str:
    """One tiny checkpoint per session: building is fast, but loading it in every test adds up."""
    from conceptengine.model.tiny import build_tiny_sam3

    return build_tiny_sam3(str(tmp_path_factory.mktemp("sam3")), VOCAB, image_size=112, seed=0)


@pytest.fixture(scope="session")
def detector(tiny_sam3):
    from conceptengine.model.sam3_backend import Sam3Detector

    return Sam3Detector.from_pretrained(tiny_sam3)


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
