"""The whole loop on the rendered domain, in-process and on Ray, plus the exports."""

import json
import tarfile

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pycocotools import mask as mask_utils

from conceptengine.config import load_config
from conceptengine.engine.status import run_status
from conceptengine.engine.store import StepRef
from conceptengine.pipelines.export import committed_annotations, export
from conceptengine.pipelines.image import run_round
from conceptengine.round.calibrate import gather
from conceptengine.round.driver import run_all, start_run
from conceptengine.verifiers.routing import TaskThresholds, decide
from tests.integration.conftest import SMALL, write_config

# The small world gives ~30 pairs a round, far too few to certify a 95%/95% guarantee (a verifier that
# never errs would need ~60 items). Loose settings let round 2 find real thresholds on round 1's verdicts.
LOOSE_CALIBRATION = [
    "routing.target_precision=0.5",
    "routing.confidence=0.5",
    "routing.min_calibration_items=10",
    "routing.audit_share=0.3",
]


def _run(ws, run_dir, overrides=()):
    cfg = load_config(None, SMALL + list(overrides))
    ctx = start_run(cfg, str(run_dir), ws, resume=False)
    return ctx, run_all(ctx, run_round)


def test_local_loop_commits_a_dataset_and_reports_each_round(small_workspace, tmp_path):
    ctx, summaries = _run(small_workspace, tmp_path / "run", LOOSE_CALIBRATION)
    _check_calibration(ctx, summaries)
    assert [s["round"] for s in summaries] == [0, 1, 2]
    assert "gold_cgF1" in summaries[0]  # round 0: the starting checkpoint on the gold split
    summaries = summaries[1:]
    for s in summaries:
        assert s["pairs_positive"] > 0 and s["pairs_negative"] > s["pairs_positive"]
        assert s["committed_pairs"] > 0
        assert s["auto_accepted"] + s["auto_rejected"] + s["to_human"] > 0
        assert 0.0 <= s["precision"] <= 1.0 and 0.0 <= s["recall"] <= 1.0
        assert "gold_cgF1" in s
        assert s["candidate_cgF1"] is None and s["promoted"] is None  # retraining is off here
        assert s["quarantined"] == 1
    # The corrupt file is reported and quarantined; the run finished anyway.
    status = run_status(str(tmp_path / "run"))
    assert any("quarantined: " in line and "corrupt" in line for line in status["lines"])
    assert any(line.startswith("round 2: complete") for line in status["lines"])

    ann = committed_annotations(ctx.store)
    assert ann.num_rows == sum(s["committed_pairs"] for s in summaries)
    on_disk = pq.read_table(tmp_path / "run" / "annotations" / "round=0001" / "part-00000.parquet")
    assert on_disk.num_rows == summaries[0]["committed_pairs"]

    # WebDataset shard: one sample per image with its NPs and decodable masks.
    shard = tmp_path / "run" / "shards" / "train-000100.tar"
    with tarfile.open(shard) as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile(next(n for n in names if n.endswith(".json"))).read())
    assert any(n.endswith(".png") for n in names)
    assert meta["pairs"] and {"noun_phrase", "masks", "is_negative"} <= set(meta["pairs"][0])

    # SA-Co/Gold export decodes with pycocotools and has one image entry per pair.
    out = tmp_path / "saco.json"
    export(str(tmp_path / "run"), "saco", str(out))
    saco = json.loads(out.read_text())
    assert len(saco["images"]) == ann.num_rows
    for a in saco["annotations"][:20]:
        m = mask_utils.decode(
            {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
        )
        assert m.sum() > 0
    coco = tmp_path / "coco.json"
    export(str(tmp_path / "run"), "coco", str(coco))
    assert json.loads(coco.read_text())["categories"]


def _check_calibration(ctx, summaries):
    """Round 1 sends everything to humans; round 2 calibrates on those verdicts, routes with the result and
    audits; round 2's score-blind verdicts (audits included) are the next round's calibration data."""
    one, two = (ctx.store.manifest(StepRef(r, "calibrate"))["extra"] for r in (1, 2))
    assert one["calibration_items"] == {"mv": 0, "ev": 0}
    assert summaries[1]["human_share"] == 1.0 and summaries[1]["auto_accepted"] == 0
    verdicts = ctx.store.read_step(StepRef(1, "human_review"), "verdicts")
    tasks, subjects = verdicts["task"].to_pylist(), verdicts["subject_id"].to_pylist()
    # EV calibrates on the pairs it may decide (routing.ev_scope, default: those without a proposed mask)
    routed_one = ctx.store.read_step(StepRef(1, "route"), "routed").to_pylist()
    maskless = {row["pair_id"] for row in routed_one if not row["masks"]}
    ev_items = sum(t == "ev" and s in maskless for t, s in zip(tasks, subjects, strict=True))
    assert two["calibration_items"] == {"mv": tasks.count("mv"), "ev": ev_items}
    assert summaries[2]["thresholds"] == two["thresholds"]
    th = {t: TaskThresholds(**two["thresholds"][t]) for t in ("mv", "ev")}
    assert th["mv"].any or th["ev"].any, two  # loose settings: something is certified on round 1's data
    routed = ctx.store.read_step(StepRef(2, "route"), "routed")
    audited = 0
    for row in routed.to_pylist():
        if row["ev_route"] is None:
            continue
        if not row["masks"]:  # EV is decided by its own score
            would = decide(row["ev_probs"][0], th["ev"])
            assert row["ev_route"] == ("human" if row["ev_audit"] else would)
            assert row["ev_audit"] in (None, would)
        else:  # EV scored the pair with boxes: a human decides it
            assert row["ev_route"] == "human" and row["ev_audit"] is None
        audited += (row["ev_audit"] is not None) + sum(a is not None for a in row["mask_audit"])
    assert audited == summaries[2]["audited"] > 0
    assert (
        summaries[2]["human_share"] < 1.0
        and summaries[2]["auto_accepted"] + summaries[2]["auto_rejected"] > 0
    )
    later = gather(ctx, 3)
    round_two = later.filter(pc.equal(later["round"], 2))
    assert sum(a is not None for a in round_two["audit"].to_pylist()) == audited
    # Committed precision covers every committed pair, automatic ones included.
    assert 0.0 <= summaries[2]["pair_precision"] <= 1.0


def test_ray_runner_commits_what_the_local_runner_commits(small_workspace, tmp_path, ray_session):
    """Same pairs and decisions on Ray actor pools as in-process. Masks may differ in a few pixels: Ray
    re-batches rows, and batched float math is not bit-identical across batch shapes."""
    ctx_local, _ = _run(small_workspace, tmp_path / "local")
    ctx_ray, summaries = _run(small_workspace, tmp_path / "ray", ["runner=ray"])
    assert len(summaries) == 3
    a = {r["pair_id"]: r for r in committed_annotations(ctx_local.store).to_pylist()}
    b = {r["pair_id"]: r for r in committed_annotations(ctx_ray.store).to_pylist()}
    assert a and set(a) == set(b)
    same = sum(
        a[k]["is_negative"] == b[k]["is_negative"] and len(a[k]["masks"]) == len(b[k]["masks"]) for k in a
    )
    assert same / len(a) >= 0.95


def test_a_finished_run_is_reused_not_recomputed(small_workspace, tmp_path):
    cfg = load_config(None, SMALL)
    ctx = start_run(cfg, str(tmp_path / "run"), small_workspace, resume=False)
    first = run_all(ctx, run_round)
    seen = []
    ctx2 = start_run(cfg, str(tmp_path / "run"), small_workspace, resume=True)
    ctx2.on_step = lambda step, phase, info: seen.append((step, phase, info.get("reused")))
    second = run_all(ctx2, run_round)
    assert first == second
    assert all(phase == "done" and reused for _, phase, reused in seen)


def test_config_file_with_relative_paths_validates(small_workspace):
    path = write_config(small_workspace, "check.yaml")
    assert load_config(path).rounds.count == 2
    assert np.isfinite(len(path.read_text()))
