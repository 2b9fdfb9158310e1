"""The region EV: unboxed objects segmented by the finder, each judged by the MV scorer's slot heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conceptengine.verifiers import choices
from conceptengine.verifiers.backend_factory import make_backend
from conceptengine.verifiers.grounded.backend import GroundedBackend, grounded_task
from conceptengine.verifiers.grounded.ev_model import GroundedEVConfig, GroundedEVModel
from conceptengine.verifiers.grounded.ev_train import box_channel
from conceptengine.verifiers.grounded.model import FLOOR, GroundedMVConfig, GroundedMVModel
from conceptengine.verifiers.grounded.region_ev import (
    RegionEVModel,
    likeliest_piece,
    platt_fit,
    split_objects,
)
from conceptengine.verifiers.settings import BackendParams
from conceptengine.verifiers.verify import GroundedExhaustivityVerifier, exhaustivity_verifier

SLOTS = [["leaf", ["square", "circle"]], ["colour", ["red", "blue"]]]


def parts(silhouette: bool = True) -> tuple[GroundedEVModel, GroundedMVModel]:
    torch.manual_seed(0)
    finder = GroundedEVModel(
        GroundedEVConfig(
            slots=SLOTS,
            detector_channels=[8, 16],
            judge_channels=[8, 16],
            image_size=32,
            silhouette=silhouette,
            centre_offsets=silhouette,
        )
    )
    return finder.eval(), GroundedMVModel(GroundedMVConfig(slots=SLOTS, channels=[8, 16])).eval()


@pytest.fixture(scope="module")
def region_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    # a finder that calls every pixel foreground (its head's last bias) and no cell a centre
    finder, judge = parts()
    with torch.no_grad():
        finder.foreground.head[-1].bias.fill_(20.0)
        finder.missed.bias.fill_(-20.0)
    path = tmp_path_factory.mktemp("region") / "ev-r0001"
    RegionEVModel.from_parts(finder, judge).save_pretrained(path)
    return str(path)


def test_touching_objects_split_at_their_centres_and_specks_are_dropped() -> None:
    free = np.zeros((20, 44), dtype=bool)
    free[5:15, 2:42] = True  # two 10 x 20 objects side by side: one connected region
    free[0:2, 0:2] = True  # a speck
    pieces = split_objects(free, np.array([[10, 12], [10, 31]]), min_pixels=12)
    assert len(pieces) == 2
    left, right = sorted(pieces, key=lambda p: np.nonzero(p)[1].mean())
    assert left[10, 3] and right[10, 40] and not (left & right).any()
    assert abs(int(left.sum()) - 200) <= 20 and abs(int(right.sum()) - 200) <= 20
    # no centre fell on the region: it is one object, seeded at its deepest pixel
    whole = split_objects(free, np.zeros((0, 2), dtype=int), min_pixels=12)
    assert len(whole) == 1 and whole[0].sum() == 400
    assert split_objects(np.zeros((8, 8), dtype=bool), np.zeros((0, 2), dtype=int), 12).shape == (0, 8, 8)


def test_it_is_built_from_a_trained_finder_and_judge_and_round_trips(tmp_path) -> None:
    finder, judge = parts()
    region = RegionEVModel.from_parts(finder, judge)
    assert torch.equal(region.detector[0][0].weight, finder.detector[0][0].weight)
    assert torch.equal(region.foreground.squeeze.weight, finder.foreground.squeeze.weight)
    assert torch.equal(region.judge.tower[0][0].weight, judge.tower[0][0].weight)
    region.save_pretrained(tmp_path / "ev")
    loaded = RegionEVModel.from_pretrained(tmp_path / "ev").eval()
    pixels, embeds = torch.rand(3, 4, 32, 32), torch.randn(3, 384)
    probs = loaded.choice_probs(pixels, embeds)
    assert torch.allclose(probs, region.choice_probs(pixels, embeds))
    assert probs.shape == (3, len(choices.EV)) and torch.allclose(probs.sum(-1), torch.ones(3))
    with pytest.raises(ValueError, match="silhouette and centre_offsets"):
        RegionEVModel.from_parts(*parts(silhouette=False))


def test_accept_is_one_minus_the_likeliest_unboxed_piece(region_path: str) -> None:
    model = RegionEVModel.from_pretrained(region_path).eval()
    rgb = torch.rand(2, 3, 32, 32)
    boxes = torch.stack(
        [box_channel(np.array([[0.0, 0.0, 0.5, 1.0]]), 32), box_channel(np.array([[0, 0, 1, 1]]), 32)]
    )
    with torch.no_grad():
        out = model(torch.cat([rgb, boxes[:, None]], 1), torch.randn(2, 384))
    half, covered = out.pieces
    assert len(half) == 1 and half[0][:, :16].sum() == 0 and half[0][:, 16:].all()  # the unboxed half only
    accept = torch.sigmoid(out.accept_logits)
    assert accept[0] == pytest.approx(1 - float(out.piece_probs[0].max()), abs=1e-5)
    assert len(covered) == 0 and accept[1] == pytest.approx(1 - FLOOR, abs=1e-6)  # everything boxed


def test_the_verifier_interface_serves_it_as_ev(region_path: str) -> None:
    assert grounded_task(region_path) == "ev"
    backend = make_backend(BackendParams(), region_path)
    assert isinstance(backend, GroundedBackend) and backend.view_size == 32
    ev = exhaustivity_verifier(backend)
    assert isinstance(ev, GroundedExhaustivityVerifier)
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    probs = ev.score_requests(
        [ev.request(image, "red square", [[0, 0, 32, 48]]), ev.request(image, "circle", [])]
    )
    assert probs.shape == (2, len(choices.EV)) and np.allclose(probs.sum(-1), 1, atol=1e-5)


def test_the_likeliest_piece_is_platt_scaled(region_path: str) -> None:
    model = RegionEVModel.from_pretrained(region_path).eval()
    pixels, embeds = torch.cat([torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)], 1), torch.randn(1, 384)
    with torch.no_grad():
        plain = model(pixels, embeds)
        model.config.scale, model.config.bias = 2.0, -1.0
        scaled = model(pixels, embeds)
    top = float(plain.piece_probs[0].max())
    logit = np.log(top) - np.log1p(-top)
    assert float(plain.accept_logits[0]) == pytest.approx(-logit, abs=1e-4)
    assert float(scaled.accept_logits[0]) == pytest.approx(-(2.0 * logit - 1.0), abs=1e-4)


def test_a_piece_the_finder_half_believes_in_counts_less_with_objectness_power(region_path: str) -> None:
    probs, objectness = torch.tensor([0.8, 0.6]), np.array([0.5, 1.0], dtype=np.float32)
    assert float(likeliest_piece(probs, objectness, 0.0)) == pytest.approx(0.8)  # off: the match alone
    assert float(likeliest_piece(probs, objectness, 2.0)) == pytest.approx(0.6)  # 0.8 * 0.25 < 0.6 * 1
    model = RegionEVModel.from_pretrained(region_path).eval()
    pixels, embeds = torch.cat([torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)], 1), torch.randn(1, 384)
    with torch.no_grad():
        model.config.objectness_power = 3.0
        out = model(pixels, embeds)
    (objectness,) = out.objectness
    assert len(objectness) == len(out.pieces[0]) and np.all((objectness > 0.5) & (objectness <= 1))
    top = float((out.piece_probs[0] * torch.from_numpy(objectness) ** 3).max())
    assert float(torch.sigmoid(out.accept_logits[0])) == pytest.approx(1 - top, abs=1e-5)


def test_platt_fit_recovers_the_scaling_the_verdicts_were_drawn_with() -> None:
    torch.manual_seed(0)
    logits = torch.randn(20_000) * 3
    accepted = torch.bernoulli(torch.sigmoid(-(2.0 * logits + 1.0)))
    scale, bias = platt_fit(logits, accepted)
    assert scale == pytest.approx(2.0, abs=0.15) and bias == pytest.approx(1.0, abs=0.15)
