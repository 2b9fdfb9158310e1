import pytest
import torch

from conceptengine.model.evaluate import evaluate_detector
from conceptengine.model.presence_bias import fit_presence_bias, presence_logit_bias
from conceptengine.model.sam3_backend import Sam3Detector
from conceptengine.pipelines.demo import SHIPPED_SAM3
from conceptengine.sim.oracle import Oracle
from conceptengine.sim.render import STYLES
from conceptengine.sim.world import build_world


@pytest.fixture(scope="module")
def held_out_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib")
    build_world(root, n_train=0, n_gold=6, seed=31, image_size=192, style=STYLES["demo"])
    return Oracle(root).gold_annotations(split="gold", nps_per_image=6, negative_share=0.5, seed=0)


def test_fit_keeps_the_best_shift_in_the_weights(held_out_split):
    detector = Sam3Detector.from_pretrained(str(SHIPPED_SAM3))
    base = presence_logit_bias(detector.model).detach().clone()
    fit = fit_presence_bias(detector, held_out_split, offsets=(-3.0, 0.0, 3.0))

    scores = {float(o): s for o, s in fit["cgF1"].items()}
    assert set(scores) == {-3.0, 0.0, 3.0}
    # The three shifts answer differently: the presence logit really moves the operating point.
    assert len({round(s, 6) for s in scores.values()}) > 1
    best = max(scores.values())
    assert scores[fit["offset"]] == best
    assert abs(fit["offset"]) == min(abs(o) for o, s in scores.items() if s == best)
    assert torch.allclose(presence_logit_bias(detector.model), base + fit["offset"])
    assert evaluate_detector(detector, held_out_split).cgF1 == pytest.approx(best)


def test_fit_needs_an_offset(held_out_split):
    detector = Sam3Detector.from_pretrained(str(SHIPPED_SAM3))
    with pytest.raises(ValueError, match="offsets is empty"):
        fit_presence_bias(detector, held_out_split, offsets=())
