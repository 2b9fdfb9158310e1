"""scripts/compose_region_ev.py: the demo's region EV composed from a trained finder and judge."""

import json
import sys
from pathlib import Path

import torch

from conceptengine.sim.taxonomy import shapes_graph
from conceptengine.verifiers.grounded.ev_model import GroundedEVConfig, GroundedEVModel
from conceptengine.verifiers.grounded.model import GroundedMVConfig, GroundedMVModel
from conceptengine.verifiers.grounded.region_ev import RegionEVModel
from conceptengine.verifiers.grounded.slots import ontology_slots

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import compose_region_ev as compose


def test_it_chooses_the_objectness_power_and_scaling_on_the_training_world(tmp_path) -> None:
    torch.manual_seed(0)
    slots = ontology_slots(shapes_graph())
    finder = GroundedEVModel(
        GroundedEVConfig(
            slots=slots, detector_channels=[8, 16], judge_channels=[8, 16], image_size=32,
            silhouette=True, centre_offsets=True,
        )
    )  # fmt: skip
    with torch.no_grad():  # every pixel foreground, so every example has pieces to judge
        finder.foreground.head[-1].bias.fill_(20.0)
    finder.save_pretrained(tmp_path / "finder")
    GroundedMVModel(GroundedMVConfig(slots=slots, channels=[8, 16])).save_pretrained(tmp_path / "judge")
    argv = ["--finder", str(tmp_path / "finder"), "--judge", str(tmp_path / "judge"), "--out",
            str(tmp_path / "ev"), "--fit-images", "3", "--no-score", "--threads", "1"]  # fmt: skip
    assert compose.main(argv) == 0
    scaling = json.loads((tmp_path / "ev" / "metrics.json").read_text())["scaling"]
    aucs = scaling["auc_per_objectness_power"]
    assert [float(k) for k in aucs] == list(compose.OBJECTNESS_POWERS)
    assert aucs[str(scaling["objectness_power"])] == max(aucs.values())  # the best on the training world
    model = RegionEVModel.from_pretrained(tmp_path / "ev")
    assert model.config.objectness_power == scaling["objectness_power"]
    assert (model.config.scale, model.config.bias) == (scaling["scale"], scaling["bias"])
