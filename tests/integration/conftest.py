"""A small rendered workspace shared by the integration tests: world + tiny models built once."""

from pathlib import Path

import pytest
import yaml
from rich.console import Console

from conceptengine.config import load_config
from conceptengine.pipelines.demo import DEMO_EV_MODEL, prepare_demo_workspace

SMALL = [
    # The plain look only: these tests' expectations were set on this world (the shifted look changes
    # images, hence media ids and every hash-based split); `shifted_workspace` has half its images shifted.
    "media.sim.shifted_share=0",
    "media.sim.n_train=12",
    "media.sim.n_gold=4",
    "media.sim.n_corrupt=1",
    "rounds.count=2",
    "rounds.images_per_round=5",
    "gold.nps_per_image=4",
    "ontology.max_nps_per_image=6",
    "runner=local",
    "review.simulated_reviewers=2",
    # The built SAM 3 is untrained: a low threshold makes it propose masks, so MV, shards and exports
    # carry real masks through the loop.
    "sam3.score_threshold=0.2",
    "sam3.max_masks=3",
    "retrain.enabled=false",  # retraining has its own test (test_retrain.py)
    "verifier_retrain.enabled=false",  # ... and so has verifier retraining
    # the demo's grounded scorers answer one task each: EV has its own checkpoint, as the demo's config says
    f"verifier.ev_model={DEMO_EV_MODEL}",
]


@pytest.fixture(scope="session")
def small_workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("ws")
    cfg = load_config(None, SMALL)
    prepare_demo_workspace(ws, cfg, Console(quiet=True))
    return ws


# Half the images in the shifted look, as in the demo: gold then scores that domain on its own.
SHIFTED = ["media.sim.shifted_share=0.5", "gold.report_domain=rendered-shapes-shifted"]


@pytest.fixture(scope="session")
def shifted_workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("ws-shifted")
    prepare_demo_workspace(ws, load_config(None, SMALL + SHIFTED), Console(quiet=True))
    return ws


def write_config(ws: Path, name: str, extra: list[str] | None = None) -> Path:
    cfg = load_config(None, SMALL + (extra or []))
    path = ws / name
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path
