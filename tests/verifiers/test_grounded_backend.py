"""The grounded MV scorer behind the verifier interface: chosen by its checkpoint, fed its own crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conceptengine.engine.stage import StageConfig, get_stage
from conceptengine.verifiers import choices
from conceptengine.verifiers.backend_factory import make_backend
from conceptengine.verifiers.grounded import ev_train
from conceptengine.verifiers.grounded.backend import GroundedBackend, boxed_view, grounded_task
from conceptengine.verifiers.grounded.ev_model import GroundedEVConfig, GroundedEVModel
from conceptengine.verifiers.grounded.model import GroundedMVConfig, GroundedMVModel
from conceptengine.verifiers.settings import BackendParams
from conceptengine.verifiers.stage import AIVerifyStage  # noqa: F401 (registers ai_verify for get_stage run alone)
from conceptengine.verifiers.verify import (
    ExhaustivityVerifier,
    GroundedExhaustivityVerifier,
    GroundedMaskVerifier,
    MaskVerifier,
    exhaustivity_verifier,
    mask_verifier,
)

from .conftest import proposals_table, square_mask

SLOTS = [["leaf", ["square", "circle"]], ["colour", ["red", "blue"]]]


@pytest.fixture(scope="module")
def grounded_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("grounded") / "mv-g0001"
    GroundedMVModel(GroundedMVConfig(slots=SLOTS, channels=[8, 16])).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def grounded_ev_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("grounded") / "ev-g0001"
    GroundedEVModel(
        GroundedEVConfig(slots=SLOTS, detector_channels=[8, 16], judge_channels=[8, 16], image_size=32)
    ).save_pretrained(path)
    return str(path)


def test_make_backend_recognises_the_checkpoint(grounded_path: str, tiny_verifier_path: str) -> None:
    assert grounded_task(grounded_path) == "mv" and grounded_task(tiny_verifier_path) is None
    backend = make_backend(BackendParams(), grounded_path)
    assert isinstance(backend, GroundedBackend) and backend.version == "mv-g0001"
    assert isinstance(mask_verifier(backend), GroundedMaskVerifier)
    assert type(mask_verifier(make_backend(BackendParams(), tiny_verifier_path))) is MaskVerifier


def test_the_verdict_comes_from_the_masked_pixels(grounded_path: str) -> None:
    mv = mask_verifier(GroundedBackend(grounded_path))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    masks = [square_mask(5, 5, 20), square_mask(40, 30, 12)]
    probs = mv.score(image, "red square", masks)
    assert probs.shape == (2, len(choices.MV)) and np.allclose(probs.sum(-1), 1, atol=1e-5)
    zoomed_in, zoomed_out = mv.requests(image, "red square", masks[:1])[0].views
    assert all(v.mode == "RGBA" and v.size == (48, 48) for v in (zoomed_in, zoomed_out))
    assert mv.requests(image, "x", []) == []
    alpha, context = np.asarray(zoomed_in)[..., 3], np.asarray(zoomed_out)[..., 3]
    assert alpha[24, 24] == 255 and alpha[0, 0] == 0  # the mask rides in the alpha channel, centred
    assert (context > 127).sum() < (alpha > 127).sum() / 3  # zoomed out: the same mask, smaller
    other = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    assert not np.allclose(mv.score(other, "red square", masks), probs)  # another picture, another verdict


def test_it_answers_mv_only_and_names_the_fix(grounded_path: str) -> None:
    backend = GroundedBackend(grounded_path)
    view = Image.new("RGBA", (48, 48))
    with pytest.raises(ValueError, match="verifier.ev_model"):
        backend.score([[view]], ["star"], list(choices.EV.letters))
    with pytest.raises(ValueError, match="2 RGBA 48 px view"):
        backend.score([[Image.new("RGB", (112, 112))] * 2], ["star"], list(choices.MV.letters))


def test_ai_verify_stage_with_grounded_mv_and_an_mllm_ev(
    tmp_path, grounded_path: str, tiny_verifier_path: str
) -> None:
    table = proposals_table(tmp_path, [("red square", [square_mask(5, 5, 20), square_mask(40, 30, 12)]),
                                       ("star", [])])  # fmt: skip
    stage = get_stage("ai_verify")(StageConfig(), model_path=grounded_path, ev_model_path=tiny_verifier_path)
    rows = stage(table).to_pylist()
    assert [r["error"] for r in rows] == [None, None]
    assert rows[0]["verifier_version"] == "mv-g0001+" + tiny_verifier_path.rsplit("/", 1)[-1]
    assert [len(r["mv_probs"]) for r in rows] == [2, 0]
    for r in rows:
        assert len(r["ev_probs"]) == len(choices.EV) and abs(sum(r["ev_probs"]) - 1) < 1e-5
        assert all(len(p) == len(choices.MV) and abs(sum(p) - 1) < 1e-5 for p in r["mv_probs"])


def test_a_grounded_scorer_cannot_serve_ev(grounded_path: str) -> None:
    with pytest.raises(ValueError, match=r"verifier.ev_model \(unset.*set verifier.ev_model to an MLLM"):
        get_stage("ai_verify")(StageConfig(), model_path=grounded_path).setup()


def test_ev_reads_the_image_with_its_boxes_as_training_did(grounded_ev_path: str) -> None:
    backend = make_backend(BackendParams(), grounded_ev_path)
    assert isinstance(backend, GroundedBackend) and backend.task == "ev" and backend.view_size == 32
    ev = exhaustivity_verifier(backend)
    assert isinstance(ev, GroundedExhaustivityVerifier)
    assert type(exhaustivity_verifier(object())) is ExhaustivityVerifier  # type: ignore[arg-type]
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    boxes = [[10, 6, 30, 30]]
    view = boxed_view(image, boxes, 32)
    data = ev_train.EVData(
        images=ev_train.image_tensor(image, 32)[None], media=torch.tensor([0]),
        boxes=[ev_train.normalised_boxes(boxes, 60, 80)], phrases=["star"], choices=torch.tensor([0]),
        missed=torch.zeros(1, 4, 4), dense=torch.tensor([False]), objects=[], object_slots=[],
    )  # fmt: skip
    trained_on = ev_train.pixels_of(data, torch.tensor([0]))[0].numpy()
    np.testing.assert_allclose(
        backend._pixels([view]), trained_on, atol=1e-6
    )  # serving sees what training saw
    probs = ev.score(image, "star", boxes)
    assert probs.shape == (len(choices.EV),) and abs(probs.sum() - 1) < 1e-5


def test_ai_verify_stage_with_both_grounded_scorers(
    tmp_path, grounded_path: str, grounded_ev_path: str
) -> None:
    table = proposals_table(tmp_path, [("red square", [square_mask(5, 5, 20)]), ("star", [])])
    stage = get_stage("ai_verify")(StageConfig(), model_path=grounded_path, ev_model_path=grounded_ev_path)
    rows = stage(table).to_pylist()
    assert [r["error"] for r in rows] == [None, None] and rows[0]["verifier_version"] == "mv-g0001+ev-g0001"
    assert [len(r["mv_probs"]) for r in rows] == [1, 0] and all(
        len(r["ev_probs"]) == len(choices.EV) for r in rows
    )
    swapped = get_stage("ai_verify")(StageConfig(), model_path=grounded_ev_path, ev_model_path=grounded_path)
    with pytest.raises(ValueError, match=r"verifier.model: ev-g0001 is a grounded ev scorer"):
        swapped.setup()
