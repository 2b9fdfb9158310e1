"""The grounded MV scorer: its input, its checkpoint, and that what it learns depends on the picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conceptengine.verifiers.choices import MV
from conceptengine.verifiers.grounded.crops import object_crop, object_views
from conceptengine.verifiers.grounded.model import GroundedMVConfig, GroundedMVModel
from conceptengine.verifiers.grounded.phrases import PhraseEmbedder
from conceptengine.verifiers.grounded.train import MVData, accept_probs, needs_targets, train
from conceptengine.verifiers.train_metrics import auroc

SLOTS = [["leaf", ["square", "circle"]], ["colour", ["red", "blue"]]]


@pytest.fixture(scope="module")
def embedder() -> PhraseEmbedder:
    return PhraseEmbedder()


def test_the_crop_is_centred_on_the_object_with_its_mask_as_a_fourth_channel() -> None:
    image = np.zeros((100, 120, 3), dtype=np.uint8)
    mask = np.zeros((100, 120), dtype=bool)
    mask[40:60, 70:90] = True
    image[mask] = (200, 10, 10)
    crop = object_crop(image, mask, [70, 40, 90, 60], size=32)
    assert crop.shape == (4, 32, 32) and crop.dtype == np.float32
    assert crop[3, 16, 16] == 1.0 and crop[3, 0, 0] == 0.0  # the object fills the middle
    assert crop[0, 16, 16] == pytest.approx(200 / 255) and crop[2, 16, 16] == pytest.approx(10 / 255)
    with pytest.raises(ValueError, match="mask is"):
        object_crop(image, mask[:50], [70, 40, 90, 60])
    views = object_views(image, mask, [70, 40, 90, 60], size=32)
    assert views.shape == (8, 32, 32) and np.array_equal(views[:4], crop)
    # zoomed out: the same centre, the object a third as wide (20 px box at 3x in 32 px: about 11 px)
    assert views[7, 16, 16] == 1.0 and 9 <= (views[7, 16] > 0.5).sum() <= 12


def test_a_saved_scorer_loads_with_its_slots_in_order(tmp_path) -> None:
    model = GroundedMVModel(GroundedMVConfig(slots=SLOTS)).eval()
    pixels, embeds = torch.rand(3, 8, 48, 48), torch.randn(3, 384)
    probs = model.choice_probs(pixels, embeds)
    assert probs.shape == (3, len(MV.names)) and torch.allclose(probs.sum(-1), torch.ones(3))
    model.save_pretrained(tmp_path)
    again = GroundedMVModel.from_pretrained(tmp_path).eval()
    assert again.config.slots == SLOTS  # (saved configs sort dict keys: slots are a list for that reason)
    assert torch.allclose(again.choice_probs(pixels, embeds), probs)


def _squares(n: int, seed: int) -> tuple[MVData, list[str]]:
    """Red or blue squares, asked as "red square" or "blue square": the answer is in the pixels only."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 2, n)
    asked = rng.integers(0, 2, n)
    pixels = torch.zeros(n, 8, 48, 48)
    pixels[:, 3, 12:36, 12:36] = 1.0  # zoomed in: the mask; zoomed out (channels 4-7) left black
    pixels[np.arange(n), np.where(colours == 0, 0, 2), 12:36, 12:36] = 0.8
    names = ["red", "blue"]
    data = MVData(
        pixels=pixels,
        phrases=[f"{names[a]} square" for a in asked],
        choices=torch.tensor(
            [0 if a == c else len(MV.names) - 1 for a, c in zip(asked, colours, strict=True)]
        ),
        slot_values={"leaf": torch.zeros(n, dtype=torch.long), "colour": torch.tensor(colours)},
    )
    return data, [str(c) for c in colours]


def test_training_makes_the_verdict_depend_on_the_picture(embedder) -> None:
    torch.manual_seed(0)
    train_data, _ = _squares(256, 0)
    test, _ = _squares(128, 1)
    model = GroundedMVModel(GroundedMVConfig(slots=SLOTS, channels=[8, 16, 16]))
    before = auroc(accept_probs(model, test, embedder), (test.choices == 0).numpy())
    train(model, train_data, embedder, steps=200, batch_size=32, lr=3e-3)
    p = accept_probs(model, test, embedder)
    after = auroc(p, (test.choices == 0).numpy())
    assert before is not None and after is not None and after > 0.95 > before
    recoloured = test.pixels.clone()
    recoloured[:, [0, 2]] = test.pixels[:, [2, 0]]  # every red square blue and every blue one red
    flipped = accept_probs(model, test, embedder, pixels=recoloured)
    assert np.abs(p - flipped).mean() > 0.3  # the bar for image swap; untrained: about 0


def test_the_phrase_side_learns_what_the_ontology_says_each_phrase_accepts(embedder) -> None:
    """Needs targets make what "red square" accepts crisp, circles refused included; the verdicts alone say
    nothing about circles here (every object is a square)."""
    told = {
        "red square": np.array([1, 0, 1, 0], np.float32),
        "blue square": np.array([1, 0, 0, 1], np.float32),
    }
    errors = []
    for needs in (told.get, None):
        torch.manual_seed(0)
        data, _ = _squares(256, 0)
        if needs is not None:
            data.needs = needs_targets(data.phrases, needs, 4)
        model = GroundedMVModel(GroundedMVConfig(slots=SLOTS, channels=[8, 16, 16]))
        train(model, data, embedder, steps=100, batch_size=32, lr=1e-2)
        with torch.no_grad():
            learned = torch.sigmoid(model.needs(embedder(list(told))))
        errors.append(float((learned - torch.from_numpy(np.stack(list(told.values())))).abs().mean()))
    assert errors[0] < 0.15 and errors[0] < errors[1] - 0.05
