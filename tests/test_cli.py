"""The commands a new user types, through Typer's runner: demo, status, export, eval."""

import json

import pyarrow as pa
from typer.testing import CliRunner

from conceptengine.cli import app
from conceptengine.model.saco_io import write_coco_results, write_saco_gold
from conceptengine.sim.oracle import Oracle
from conceptengine.sim.world import build_world

runner = CliRunner()

TINY_DEMO = [
    "--set",
    "media.sim.n_train=6",
    "--set",
    "media.sim.n_gold=3",
    "--set",
    "rounds.images_per_round=3",
    "--set",
    "gold.nps_per_image=3",
    "--set",
    "ontology.max_nps_per_image=4",
    "--set",
    "runner=local",
    "--set",
    "retrain.enabled=false",
]


def test_demo_then_status_and_exports(tmp_path):
    ws = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--workspace", str(ws), *TINY_DEMO])
    assert result.exit_code == 0, result.output
    assert "RENDERED domain" in result.output
    assert "cgF1" in result.output and "recall" in result.output
    assert (ws / "demo.yaml").exists() and (ws / "run" / "round-0001" / "commit" / "annotations").exists()

    status = runner.invoke(app, ["status", str(ws / "run")])
    assert status.exit_code == 0 and "round 2: complete" in status.output
    assert "1 quarantined" in status.output

    for fmt in ("saco", "coco", "webdataset"):
        out = tmp_path / f"export-{fmt}"
        res = runner.invoke(app, ["export", str(ws / "run"), "--format", fmt, "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert out.exists()
    bad = runner.invoke(app, ["export", str(ws / "run"), "--format", "yolo"])
    assert bad.exit_code == 2 and "saco, coco, webdataset" in bad.output

    # A checkpoint on the run's gold split: overall numbers and a per-concept table.
    res = runner.invoke(app, ["eval", "--model", str(ws / "models" / "sam3"), "--gold", str(ws / "run")])
    assert res.exit_code == 0, res.output
    assert "per concept" in res.output
    scores = json.loads(res.output.strip().splitlines()[-1])
    assert set(scores) == {"cgF1", "IL_MCC", "pmF1"}


def test_eval_scores_a_perfect_prediction_at_100(tmp_path):
    world = tmp_path / "world"
    build_world(world, n_train=0, n_gold=3, seed=1, image_size=96)
    gold = Oracle(world).gold_annotations(split="gold", nps_per_image=4, negative_share=0.5, seed=0)
    gold_path, pred_path = tmp_path / "gold.json", tmp_path / "pred.json"
    ids = write_saco_gold(gold, str(gold_path))
    rows = [dict(r, masks=[dict(m, score=1.0) for m in r["masks"]], error=None) for r in gold.to_pylist()]
    write_coco_results(pa.Table.from_pylist(rows), str(pred_path), ids)
    result = runner.invoke(app, ["eval", "--gold", str(gold_path), "--pred", str(pred_path)])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output.strip().splitlines()[-1])
    assert scores == {"cgF1": 100.0, "IL_MCC": 1.0, "pmF1": 1.0}


def test_eval_names_the_broken_file(tmp_path):
    gold = tmp_path / "gold.json"
    gold.write_text('{"images": [{"id": 1}], "annotations": []}')
    pred = tmp_path / "pred.json"
    pred.write_text("[]")
    result = runner.invoke(app, ["eval", "--gold", str(gold), "--pred", str(pred)])
    assert result.exit_code == 2
    assert "gold.json" in result.output


def test_run_with_a_broken_config_gives_one_clear_error(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("rounds: {count: 2, imagesperround: 4}\n")
    result = runner.invoke(app, ["run", str(cfg)])
    assert result.exit_code == 2
    assert "rounds.imagesperround: unknown key" in result.output


def test_demo_with_an_unknown_focus_concept_names_it(tmp_path):
    ws = tmp_path / "demo"
    bad = ["--set", 'ontology.focus_concepts=["unicorn"]']
    result = runner.invoke(app, ["demo", "--workspace", str(ws), *TINY_DEMO, *bad])
    assert result.exit_code != 0
    assert "ontology.focus_concepts: 'unicorn' is not a concept of the ontology" in result.output
    assert not (ws / "run" / "round-0001").exists()  # stopped before any round ran
