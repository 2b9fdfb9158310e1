"""The verifier trainer: examples, split by image, loss, LoRA merge parity, resume, metrics, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from pydantic import ValidationError
from safetensors.torch import load_file

from conceptengine.config import ConfigError
from conceptengine.training.verifier import (
    ADAPTER_DIR,
    TrainVerifierConfig,
    checkpoint_dirs,
    run_training,
    train_verifier,
)
from conceptengine.training.verifier_ray import load_train_config
from conceptengine.verifiers.train_data import EXAMPLES, check_examples, split_examples, split_of
from conceptengine.verifiers.train_eval import evaluate_examples

# peft 0.21 calls a transformers API that transformers 5 deprecates; nothing to act on here.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

VIEW = 32  # 2 x 2 patches of 16 px: the smallest real LLaVA input, so each step takes milliseconds


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 6-image rendered world, its oracle-labelled examples and a tiny verifier over its vocabulary."""
    from conceptengine.pipelines.demo import ontology_vocabulary
    from conceptengine.sim.render import DEMO_STYLE
    from conceptengine.sim.verifier_examples import oracle_examples
    from conceptengine.sim.world import build_world
    from conceptengine.verifiers.tiny import build_tiny_verifier

    root = tmp_path_factory.mktemp("vtrain")
    world = build_world(root / "world", n_train=6, n_gold=0, seed=5, image_size=96, style=DEMO_STYLE)
    examples = oracle_examples(root / "world", nps_per_image=4)
    pq.write_table(examples, root / "examples.parquet")
    init = build_tiny_verifier(str(root / "init"), ontology_vocabulary(world.graph), seed=0, image_size=VIEW)
    return {"root": root, "world": root / "world", "examples": examples, "init": init}


def cfg(data, out: Path, **kw) -> TrainVerifierConfig:
    base = dict(  # noqa: C408 - keyword form reads like the config
        task="mv", init_checkpoint=data["init"], output_dir=str(out),
        examples=str(data["root"] / "examples.parquet"), view_size=VIEW, holdout_share=0.0, steps=4,
        batch_size=4, lr=1e-2, warmup_steps=0, checkpoint_every=2, log_every=1, device="cpu",
    )  # fmt: skip
    return TrainVerifierConfig(**(base | kw))


def fixed_set(data, task: str = "mv", n: int = 12) -> pa.Table:
    t = data["examples"].filter(pa.compute.equal(data["examples"]["task"], task))
    return t.slice(0, n)


# -- examples -------------------------------------------------------------------------------------------
def test_oracle_examples_are_labelled_like_an_error_free_simulated_reviewer(data):
    rows = data["examples"].to_pylist()
    by = {(r["task"], r["origin"]) for r in rows}
    assert {("mv", "gt"), ("mv", "other_concept"), ("ev", "all"), ("ev", "none")} <= by
    assert all(r["choice"] == "Accept" for r in rows if r["origin"] == "gt")
    assert all(r["choice"] == "Reject" for r in rows if r["origin"] in ("other_concept", "spurious", "extra"))
    # EV: every instance boxed -> Accept; a negative with no box -> Accept ("nothing to find")
    assert all(r["choice"] == "Accept" for r in rows if r["task"] == "ev" and r["origin"] == "all")
    mv = [r for r in rows if r["task"] == "mv"]
    assert all(len(r["masks"]) == 1 for r in mv)
    assert {r["choice"] for r in mv} == {"Accept", "Reject"}


def test_proposal_examples_label_the_shipped_sam3s_own_masks_like_the_reviewer(data):
    """MV examples from a real proposer: every mask the demo's SAM 3 returns, Accept exactly when it
    matches one of the phrase's instances at the simulated reviewer's IoU bar."""
    from conceptengine.engine import rle
    from conceptengine.model.sam3_backend import Sam3Detector
    from conceptengine.pipelines.demo import SHIPPED_SAM3
    from conceptengine.sim.oracle import Oracle
    from conceptengine.sim.reviewers import IOU_MATCH
    from conceptengine.sim.verifier_examples import proposal_examples

    detector = Sam3Detector.from_pretrained(str(SHIPPED_SAM3))
    calls = []

    def propose(image, phrases):
        calls.append(phrases)
        return [d.masks for d in detector.detect(image, phrases, 0.3)]

    rows = proposal_examples(data["world"], propose, nps_per_image=4).to_pylist()
    assert len(calls) == 6 and all(len(p) == 4 for p in calls)  # one call per image, all of its NPs
    mv, ev = [r for r in rows if r["task"] == "mv"], [r for r in rows if r["task"] == "ev"]
    assert len(mv) > 0 and len(ev) == 24 and {r["origin"] for r in rows} == {"proposer"}
    assert {r["choice"] for r in rows} <= {"Accept", "Reject"}
    oracle = Oracle(data["world"])
    for r in mv:
        h, w = r["height"], r["width"]
        mask = rle.decode(r["masks"][0]["rle"], h, w)
        truth = [rle.decode(c, h, w) for c in oracle.instances(r["media_id"], r["noun_phrase"])]
        ious = [(mask & t).sum() / (mask | t).sum() for t in truth]
        assert (r["choice"] == "Accept") == (max(ious, default=0.0) >= IOU_MATCH), r["noun_phrase"]
    # EV shows what MV accepted: exhaustive when every instance of the phrase is among those masks
    accepted = {
        (r["noun_phrase"], r["media_id"], r["masks"][0]["rle"]) for r in mv if r["choice"] == "Accept"
    }
    for r in ev:
        assert all((r["noun_phrase"], r["media_id"], m["rle"]) in accepted for m in r["masks"])
        n_truth = len(oracle.instances(r["media_id"], r["noun_phrase"]))
        assert (r["choice"] == "Accept") == (len(r["masks"]) == n_truth), r["noun_phrase"]


def test_split_is_by_image_and_stable(data):
    table = pa.concat_tables([data["examples"]] * 2)  # duplicated rows must still land on one side
    both_sides = 0
    for seed in range(6):
        train, holdout = split_examples(table, 0.5, seed=seed)
        assert train.num_rows + holdout.num_rows == table.num_rows
        assert not set(train["media_id"].to_pylist()) & set(holdout["media_id"].to_pylist())
        both_sides += bool(train.num_rows and holdout.num_rows)
    assert both_sides  # 6 images at share 0.5: some seed splits them
    ids = [f"m{i}" for i in range(2000)]
    share = np.mean([split_of(m, 0.2) == "holdout" for m in ids])
    assert 0.17 < share < 0.23
    assert [split_of(m, 0.2) for m in ids] == [split_of(m, 0.2) for m in ids]


def test_bad_examples_name_the_row(data):
    bad = data["examples"].to_pylist()[:3]
    bad[1]["choice"] = "Maybe"
    with pytest.raises(ValueError, match=r"row 1: 'Maybe' is not a mv choice"):
        check_examples(pa.Table.from_pylist(bad, schema=EXAMPLES))
    with pytest.raises(ValueError, match="lacks column"):
        check_examples(pa.table({"task": ["mv"]}))


# -- training -------------------------------------------------------------------------------------------
def test_loss_decreases_on_a_small_fixed_set(data, tmp_path):
    fixed = fixed_set(data, "ev")
    pq.write_table(fixed, tmp_path / "fixed.parquet")
    out = train_verifier(
        cfg(data, tmp_path / "out", task="ev", examples=str(tmp_path / "fixed.parquet"), lora=False, steps=12)
    )
    before = evaluate_examples(data["init"], fixed, "ev", VIEW)
    after = evaluate_examples(out, fixed, "ev", VIEW)
    assert after["nll"] < 0.7 * before["nll"], (before["nll"], after["nll"])
    log = [json.loads(line) for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13))


def test_lora_changes_only_adapters_and_the_merged_model_scores_like_the_peft_model(data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from conceptengine.verifiers.choices import MV
    from conceptengine.verifiers.train_inputs import Collator, ExampleDataset, choice_logits
    from conceptengine.verifiers.transformers_backend import TransformersBackend

    out = train_verifier(cfg(data, tmp_path / "lora", lora=True, lora_rank=4, steps=3))
    init = AutoModelForImageTextToText.from_pretrained(data["init"]).state_dict()
    merged = AutoModelForImageTextToText.from_pretrained(out).state_dict()
    targeted = [
        k
        for k in init
        if "language_model" in k and k.split(".")[-2] in ("q_proj", "k_proj", "v_proj", "o_proj")
    ]
    assert targeted and all(not torch.equal(merged[k], init[k]) for k in targeted)
    assert all(torch.equal(merged[k], init[k]) for k in init if k not in targeted)  # vision, MLP, embeddings

    base = AutoModelForImageTextToText.from_pretrained(data["init"])
    peft_model = PeftModel.from_pretrained(base, str(Path(out) / ADAPTER_DIR)).eval()
    frozen = {
        k.replace("base_model.model.", "", 1).replace(".base_layer", ""): v
        for k, v in peft_model.state_dict().items()
        if "lora_" not in k
    }
    assert frozen.keys() == init.keys()
    assert all(torch.equal(frozen[k], init[k]) for k in init), "training touched a frozen base weight"

    backend = TransformersBackend(out, batch_size=8)
    table = fixed_set(data, "mv", 6)
    items = [ExampleDataset(table, "mv", VIEW)[i] for i in range(table.num_rows)]
    batch = Collator(backend)(items)
    with torch.no_grad():
        peft_probs = torch.softmax(
            choice_logits(peft_model, batch.inputs, backend.token_ids(list(MV.letters))), -1
        )
    merged_probs = backend.score([r.views for r, _ in items], [r.prompt for r, _ in items], list(MV.letters))
    np.testing.assert_allclose(peft_probs.numpy(), merged_probs, atol=1e-5)


def test_resume_after_a_crash_equals_an_uninterrupted_run(data, tmp_path):
    straight = train_verifier(cfg(data, tmp_path / "straight", lora=True))

    class Crash(RuntimeError):
        pass

    def crash_after_step_3(metrics: dict) -> None:
        if metrics["step"] == 3:
            raise Crash

    resumed = cfg(data, tmp_path / "resumed", lora=True)
    with pytest.raises(Crash):
        run_training(resumed, report=crash_after_step_3)
    assert [d.name for d in checkpoint_dirs(resumed.output_dir)] == ["step-0000002"]
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    train_verifier(resumed)
    summary = json.loads((tmp_path / "resumed" / "training.json").read_text())
    assert summary["resumed_from"] == 2
    a = load_file(Path(straight) / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_metrics_json_reports_agreement_on_held_out_images(data, tmp_path):
    out = train_verifier(cfg(data, tmp_path / "m", holdout_share=0.4, steps=1, lora=False))
    m = json.loads((Path(out) / "metrics.json").read_text())
    h = m["holdout"]
    assert m["holdout_images"] >= 1 and m["train_images"] >= 1
    assert h["n"] == m["holdout_examples"] > 0
    assert sum(c["support"] for c in h["per_choice"].values()) == h["n"]
    assert 0.0 <= h["ece_p_accept"] <= 1.0 and 0.0 <= h["accuracy"] <= 1.0


# -- configuration errors --------------------------------------------------------------------------------
def test_bad_configs_name_what_to_fix(data, tmp_path):
    with pytest.raises(ValidationError, match="no training data"):
        TrainVerifierConfig(task="mv", init_checkpoint=data["init"], output_dir=str(tmp_path / "x"))
    with pytest.raises(ValidationError, match="output_dir must differ"):
        cfg(data, Path(data["init"]))
    with pytest.raises(ValidationError, match="task"):
        cfg(data, tmp_path / "x", task="correction")
    path = tmp_path / "train.yaml"
    path.write_text(
        f"task: mv\ninit_checkpoint: {data['init']}\noutput_dir: out\nexamples: x.parquet\nstpes: 3\n"
    )
    with pytest.raises(ConfigError, match="stpes"):
        load_train_config(path)
    with pytest.raises(ValueError, match="lora_targets"):
        train_verifier(cfg(data, tmp_path / "t", lora=True, lora_targets=r".*no_such_module"))
    with pytest.raises(FileNotFoundError, match="not a model checkpoint"):
        train_verifier(cfg(data, tmp_path / "u", init_checkpoint=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="do not exist"):
        train_verifier(cfg(data, tmp_path / "v", examples=str(tmp_path / "none.parquet")))


def test_cli_trains_with_ray_train_local_mode_and_prints_the_report(data, tmp_path):
    from typer.testing import CliRunner

    from conceptengine.cli import app

    path = tmp_path / "train.yaml"
    tree = {
        "task": "ev", "init_checkpoint": data["init"], "output_dir": str(tmp_path / "out"),
        "examples": str(data["root"] / "examples.parquet"), "view_size": VIEW, "holdout_share": 0.4,
        "steps": 5, "batch_size": 4, "lora": True, "lora_rank": 2, "device": "cpu",
    }  # fmt: skip
    path.write_text(yaml.safe_dump(tree))
    result = CliRunner().invoke(
        app, ["train", "verifier", str(path), "--set", "steps=2", "--set", "num_workers=0"]
    )
    assert result.exit_code == 0, result.output
    assert "EV verifier on the hold-out split" in result.output and "ECE(P(Accept))" in result.output
    assert json.loads((tmp_path / "out" / "training.json").read_text())["steps"] == 2
    bad = CliRunner().invoke(app, ["train", "verifier", str(path), "--set", "lora_rnak=2"])
    assert bad.exit_code == 2 and "lora_rnak" in bad.output
