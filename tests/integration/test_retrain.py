"""Retraining in the loop: a candidate per round, promotion decided on gold cgF1, the next round uses it."""

import json
from pathlib import Path

from conceptengine.config import load_config
from conceptengine.engine.store import StepRef
from conceptengine.pipelines.image import run_round
from conceptengine.round.driver import run_all, start_run
from conceptengine.round.registry import promoted_at_start_of
from conceptengine.sim.world import SHIFTED_DOMAIN
from tests.integration.conftest import SHIFTED, SMALL


def test_each_round_trains_a_candidate_and_promotes_only_on_gold_improvement(shifted_workspace, tmp_path):
    from conceptengine.sim.base_data import build_replay_set

    retrain = ["retrain.enabled=true", "retrain.steps=3", "retrain.batch_size=2", "retrain.every_rounds=1"]
    # Replay of base data: a few of the shipped checkpoint's own training images, as `conceptengine demo` does.
    replay = build_replay_set(tmp_path / "replay-world", 4)
    retrain += [f"retrain.replay_annotations={replay}", "retrain.replay_share=0.5"]
    # Each candidate's operating point, fitted on 2 replay images.
    retrain += ["retrain.presence_fit_images=2"]
    # The text tower kept as the checkpoint has it and the backbone at a tenth of the rate, as the demo's
    # shipped SAM 3 was trained.
    retrain += ["retrain.freeze_text=true", "retrain.backbone_lr_scale=0.1"]
    # Each candidate halfway between its base and its fine-tune (WiSE-FT), as the demo retrains.
    retrain += ["retrain.merge_alpha=0.5"]
    cfg = load_config(None, SMALL + SHIFTED + retrain)
    run_dir = tmp_path / "run"
    ctx = start_run(cfg, str(run_dir), shifted_workspace, resume=False)
    summaries = run_all(ctx, run_round)

    assert summaries[0]["candidate_cgF1"] is None and summaries[0]["promoted"] is None
    for r in (1, 2):
        promo = ctx.store.manifest(StepRef(r, "promote"))["extra"]
        cand = run_dir / "models" / "sam3" / f"v{r:04d}"
        assert (cand / "config.json").exists() and promo["candidate"] == f"v{r:04d}"
        assert promo["promoted"] == (promo["candidate_cgF1"] > promo["base_cgF1"])
        trained = ctx.store.manifest(StepRef(r, "retrain"))["extra"]
        # As many replay images as committed ones at share 0.5, up to repeats of the 4 there are.
        assert trained["replay_images"] == trained["images"] - trained["replay_images"] > 0
        summary = json.loads((cand / "training.json").read_text())
        assert summary["config"]["replay_annotations"] == str(replay) and summary["config"]["freeze_text"]
        assert summary["config"]["backbone_lr_scale"] == 0.1 and summary["merge_alpha"] == 0.5
        assert trained["presence_fit"] == summary["presence_fit"] and summary["presence_fit"]["images"] == 2
        assert summaries[r]["promoted"] == promo["promoted"]
        assert summaries[r]["candidate_cgF1"] == promo["candidate_cgF1"]
        on_disk = json.loads((run_dir / f"round-{r:04d}" / "summary.json").read_text())
        assert {"gold_cgF1", "domain_cgF1", "seen_cgF1", "candidate_cgF1", "promoted"} <= set(on_disk)
    # Half the world is rendered in the shifted look, gold included: that domain is scored on its own.
    gold = ctx.store.read_step(StepRef(0, "gold"), "gold")
    assert SHIFTED_DOMAIN in gold["domain"].to_pylist()
    assert all(isinstance(s["domain_cgF1"], float) for s in summaries)

    # Round 2 proposed with whatever was promoted after round 1, and every mask says which version.
    expected = promoted_at_start_of(ctx, 2)
    proposals = ctx.store.read_step(StepRef(2, "propose_masks"), "proposals")
    versions = {v for v in proposals["model_version"].to_pylist() if v is not None}
    assert versions and all(v.startswith(Path(expected.path).name + "@") for v in versions)
    registry = json.loads((run_dir / "models" / "registry.json").read_text())
    assert registry["sam3"]["promoted"] == promoted_at_start_of(ctx, 3).name
    assert [v["name"] for v in registry["sam3"]["versions"]] == ["v0000", "v0001", "v0002"]
    assert summaries[2]["model_version"] == promoted_at_start_of(ctx, 3).name


def test_cadence_by_new_pairs(small_workspace, tmp_path):
    from conceptengine.round.retrain_sam3 import retrain_due

    cfg = load_config(
        None,
        SMALL + ["retrain.enabled=true", "retrain.every_rounds=null", "retrain.min_new_pairs=1000000000"],
    )
    ctx = start_run(cfg, str(tmp_path / "run"), small_workspace, resume=False)
    assert not retrain_due(ctx, 1)


def test_verifiers_retrain_on_their_cadence_and_the_next_round_verifies_with_the_promoted_ones(
    small_workspace, tmp_path
):
    from conceptengine.round.retrain_verifiers import verifiers_at_start_of

    retrain = ["verifier_retrain.enabled=true", "verifier_retrain.every_rounds=1", "verifier_retrain.steps=2"]
    cfg = load_config(
        None, SMALL + retrain + ["verifier_retrain.min_examples=4", "verifier_retrain.batch_size=4"]
    )
    run_dir = tmp_path / "run"
    ctx = start_run(cfg, str(run_dir), small_workspace, resume=False)
    summaries = run_all(ctx, run_round)

    first = ctx.store.manifest(StepRef(1, "retrain_verifiers"))["extra"]
    assert set(first["verifiers"]) == {"mv", "ev"}  # both tasks had enough human verdicts in round 1
    for task, result in first["verifiers"].items():
        assert (Path(result["candidate"]) / "config.json").exists()
        assert result["candidate"].endswith(f"verifier-{task}/v0001") and result["examples"] >= 4
        assert result["promoted"] == (result["holdout_nll"] < result["base_holdout_nll"])
    assert summaries[1]["verifiers_promoted"] == first["verifiers_promoted"]

    # Round 2 verified with exactly what round 1 promoted (or the starting verifiers where it did not).
    current = verifiers_at_start_of(ctx, 2)
    for task in ("mv", "ev"):
        result = first["verifiers"][task]
        assert current[task] == (result["candidate"] if result["promoted"] else result["base"])
    used = ctx.store.manifest(StepRef(2, "ai_verify"))["extra"]["verifiers"]
    assert used == [current["mv"], current["ev"]]
