from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration

from conceptengine.verifiers import choices
from conceptengine.verifiers.backend import VerifierBackend
from conceptengine.verifiers.tiny import IMAGE_TOKEN, build_tiny_verifier

from .conftest import VOCAB


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)) for _ in range(n)]


def test_tiny_verifier_round_trips_through_from_pretrained(tiny_verifier_path: str) -> None:
    model = AutoModelForImageTextToText.from_pretrained(tiny_verifier_path)
    processor = AutoProcessor.from_pretrained(tiny_verifier_path)
    assert isinstance(model, LlavaForConditionalGeneration)
    assert 2e5 < sum(p.numel() for p in model.parameters()) < 5e6
    tok = processor.tokenizer
    assert model.config.image_token_id == tok.convert_tokens_to_ids(IMAGE_TOKEN)
    for letter in choices.EV.letters:  # EV's letters include MV's
        assert len(tok.encode(letter, add_special_tokens=False)) == 1
    # an NP from the vocabulary is compressed by the trained merges, not spelled out byte by byte
    assert len(tok.encode('"blue triangle"', add_special_tokens=False)) == 4  # '"', 'blue', ' triangle', '"'
    assert tok.decode(tok.encode("a never seen Wörd", add_special_tokens=False)) == "a never seen Wörd"


def test_build_is_deterministic_given_the_seed(tmp_path, tiny_verifier_path: str) -> None:
    same = build_tiny_verifier(str(tmp_path / "same"), VOCAB, seed=0)
    other = build_tiny_verifier(str(tmp_path / "other"), VOCAB, seed=1)
    ref, a, b = (
        AutoModelForImageTextToText.from_pretrained(p).state_dict() for p in (tiny_verifier_path, same, other)
    )
    assert all(torch.equal(ref[k], a[k]) for k in ref)
    assert not all(torch.equal(ref[k], b[k]) for k in ref)
    assert (tmp_path / "same" / "tokenizer.json").read_text() == (
        tmp_path / "other" / "tokenizer.json"
    ).read_text()


def test_backend_probabilities_are_the_softmax_of_choice_logits(backend) -> None:
    assert isinstance(backend, VerifierBackend)
    imgs = _images(4)
    views = [imgs[:2], imgs[2:3], imgs[1:3], imgs[3:4]]  # 1 or 2 images: rows pad to different lengths
    qs = [
        "Is this a red square?",
        "A much longer question about the striped circle in the image here?",
        "star",
        "x",
    ]
    letters = list(choices.MV.letters)
    probs = backend.score(views, qs, letters)  # batch_size=3: two batches, left-padded
    assert probs.shape == (4, 5) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)

    ids = [backend.processor.tokenizer.convert_tokens_to_ids(t) for t in letters]
    for i in range(4):  # each request alone, no padding, the model's plain forward
        text = backend.render_prompt(len(views[i]), qs[i])
        enc = backend.processor(text=[text], images=[views[i]], return_tensors="pt")
        with torch.inference_mode():
            logits = backend.model(**enc).logits[0, -1]
        manual = torch.softmax(logits[ids].double(), dim=-1).numpy()
        np.testing.assert_allclose(probs[i], manual, atol=1e-5)


def test_backend_rejects_malformed_requests(backend) -> None:
    with pytest.raises(ValueError, match="single tokens"):
        backend.score([_images(1)], ["q"], ["A", "Accept as text"])
    with pytest.raises(ValueError, match="one per prompt"):
        backend.score([_images(1)], ["q", "r"], ["A", "B"])
