"""A team's own pool: a folder of image files, captions keyed by file name and an SA-Co/Gold JSON; no
rendered world at run time (the files are cut from one only because the test needs images with truth)."""

import json
import logging
import shutil
from pathlib import Path

import pyarrow as pa

from conceptengine.config import load_config
from conceptengine.engine.store import StepRef
from conceptengine.model.saco_io import write_saco_gold
from conceptengine.pipelines.image import run_round
from conceptengine.round.driver import run_all, start_run
from conceptengine.sim.captioner import OracleCaptioner
from conceptengine.sim.oracle import Oracle


def _team_folder(world_dir: Path, root: Path) -> None:
    """photos/IMG_*.png, captions.json keyed by file name, gold/gold.json, ontology.yaml."""
    oracle = Oracle(world_dir)
    world = oracle.world
    (root / "photos").mkdir(parents=True)
    (root / "gold").mkdir()
    captioner = OracleCaptioner(oracle, recall=0.8, noise=0.1)
    captions = {}
    for i, media_id in enumerate(sorted(world.media_ids("train"))):
        name = f"IMG_{i:04d}.png"
        shutil.copy(world.image_path(media_id), root / "photos" / name)
        captions[name] = captioner.caption(media_id)
    (root / "captions.json").write_text(json.dumps(captions))
    gold = oracle.gold_annotations("gold", nps_per_image=4, negative_share=0.5)
    names = {m: f"GOLD_{j:04d}.png" for j, m in enumerate(sorted(world.media_ids("gold")))}
    for media_id, name in names.items():
        shutil.copy(world.image_path(media_id), root / "gold" / name)
    uris = pa.array([names[m] for m in gold["media_id"].to_pylist()])
    write_saco_gold(
        gold.set_column(gold.schema.get_field_index("uri"), "uri", uris), str(root / "gold/gold.json")
    )
    shutil.copy(world_dir / "ontology.yaml", root / "ontology.yaml")


def test_a_folder_of_images_with_captions_runs_two_rounds_that_nobody_reviews(
    small_workspace, tmp_path, caplog
):
    root = tmp_path / "team"
    _team_folder(small_workspace / "world", root)
    models = small_workspace / "models"
    cfg = load_config(
        None,
        [
            "runner=local",
            "media.source=files",
            "media.uri=photos/*.png",
            "media.gold_json=gold/gold.json",
            "ontology.path=ontology.yaml",
            "ontology.captions_path=captions.json",
            "ontology.max_nps_per_image=6",
            "rounds.count=2",
            "rounds.images_per_round=5",
            f"sam3.model={models / 'sam3'}",
            "sam3.score_threshold=0.2",
            "sam3.max_masks=3",
            f"verifier.model={models / 'verifier'}",
            f"verifier.ev_model={models / 'verifier-ev'}",  # the demo's grounded scorers: one per task
            # People answer through the review app; none does here, so each round commits at its deadline.
            "review.simulated_reviewers=0",
            "review.deadline_s=1",
            "review.poll_s=0.2",
            "retrain.every_rounds=1",
            "verifier_retrain.enabled=false",
        ],
    )
    ctx = start_run(cfg, str(tmp_path / "run"), root, resume=False)
    with caplog.at_level(logging.WARNING):
        summaries = run_all(ctx, run_round)

    assert [s["round"] for s in summaries] == [0, 1, 2]
    assert summaries[0]["gold_cgF1"] is not None  # the gold JSON's pairs were scored
    for s in summaries[1:]:
        # Positive candidates come from the captions file, found by each image's file name.
        assert s["pairs_positive"] > 0 and s["pairs_negative"] > 0
        assert s["committed_pairs"] == 0
        assert s["candidate_cgF1"] is None and s["promoted"] is None
        assert ctx.store.manifest(StepRef(s["round"], "retrain")) is None
    assert "nothing committed so far, so SAM 3 is not retrained" in caplog.text
