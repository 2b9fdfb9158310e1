"""Models by folder or hub id, with no network: a Hugging Face cache prepared here, in the hub's own layout."""

import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import constants
from typer.testing import CliRunner

from conceptengine.cli import app
from conceptengine.engine.model_refs import ModelUnavailable, hub_id, hub_snapshot, model_dir
from conceptengine.model.saco_io import write_saco_gold
from conceptengine.sim.oracle import Oracle
from conceptengine.sim.world import build_world

DEMO_SAM3 = Path(__file__).resolve().parents[2] / "conceptengine" / "assets" / "sam3-demo"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An offline Hugging Face cache holding acme/sam3-tiny (the demo SAM 3) at refs main and v1."""
    cache = tmp_path / "hf-cache"
    repo = cache / "models--acme--sam3-tiny"
    shutil.copytree(DEMO_SAM3, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    for ref in ("main", "v1"):
        (repo / "refs" / ref).write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub_snapshot.cache_clear()
    yield repo / "snapshots" / COMMIT
    hub_snapshot.cache_clear()


def test_hub_ids_are_told_from_paths():
    assert hub_id("facebook/sam3") == ("facebook/sam3", None)
    assert hub_id("Qwen/Qwen2.5-VL-7B-Instruct@refs/pr/3") == ("Qwen/Qwen2.5-VL-7B-Instruct", "refs/pr/3")
    assert hub_id("models/sam3") == ("models/sam3", None)  # spelled like one: a folder that exists wins
    assert hub_id("./models/sam3") is None and hub_id("a/b/c") is None and hub_id("sam3") is None


def test_a_hub_id_loads_from_the_offline_cache_and_a_folder_wins(tmp_path, hf_cache):
    assert model_dir(tmp_path, "acme/sam3-tiny", "sam3.model") == str(hf_cache)
    assert model_dir(tmp_path, "acme/sam3-tiny@v1", "sam3.model") == str(hf_cache)
    (tmp_path / "acme" / "sam3-tiny").mkdir(parents=True)
    assert model_dir(tmp_path, "acme/sam3-tiny", "sam3.model") == str(tmp_path / "acme" / "sam3-tiny")
    assert model_dir(tmp_path, "/abs/dir", "sam3.model") == "/abs/dir"


def test_a_hub_id_missing_from_the_offline_cache_says_what_to_do(tmp_path, hf_cache):
    with pytest.raises(ModelUnavailable) as err:
        model_dir(tmp_path, "facebook/sam3", "sam3.model")
    msg = str(err.value)
    assert msg.startswith(
        f"sam3.model: facebook/sam3 is neither a folder at {tmp_path / 'facebook' / 'sam3'} nor in"
    )
    assert "HF_HUB_OFFLINE is set" in msg and "hf download facebook/sam3" in msg
    with pytest.raises(ModelUnavailable, match="acme/sam3-tiny@v2 is neither .* --revision v2`"):
        model_dir(tmp_path, "acme/sam3-tiny@v2", "sam3.model")  # a revision the cache does not hold


def test_eval_and_run_take_a_hub_id(tmp_path, hf_cache):
    world = tmp_path / "world"
    build_world(world, n_train=0, n_gold=2, seed=1, image_size=96)
    gold = Oracle(world).gold_annotations(split="gold", nps_per_image=3, negative_share=0.5, seed=0)
    write_saco_gold(gold, str(tmp_path / "gold.json"))
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--model", "acme/sam3-tiny", "--gold", str(tmp_path / "gold.json")])
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.output.strip().splitlines()[-1])) == {"cgF1", "IL_MCC", "pmF1"}

    # A run whose SAM 3 is a hub id passes the model check; one the cache lacks fails it, one line, no run.
    config = tmp_path / "team.yaml"
    config.write_text("sam3: {model: facebook/sam3}\nverifier: {model: acme/sam3-tiny}\n")
    res = runner.invoke(app, ["run", str(config), "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 2
    said = " ".join(res.output.split())
    assert "sam3.model: facebook/sam3 is neither a folder at" in said and "Traceback" not in said
    assert not (tmp_path / "run").exists()
    config.write_text("sam3: {model: acme/sam3-tiny}\nverifier: {model: verifiers/missing}\n")
    res = runner.invoke(app, ["run", str(config), "--run-dir", str(tmp_path / "run")])
    said = " ".join(res.output.split())
    assert (
        res.exit_code == 2 and "verifier.model: verifiers/missing is neither a folder at" in said
    )  # sam3.model passed


def test_an_unreachable_hub_says_so(tmp_path, hf_cache, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    assert model_dir(tmp_path, "acme/sam3-tiny", "sam3.model") == str(hf_cache)  # cached: served offline
    with pytest.raises(ModelUnavailable, match="the hub cannot be reached: fix the path, or download"):
        model_dir(tmp_path, "facebook/sam3", "sam3.model")
