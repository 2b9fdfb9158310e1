from pathlib import Path

import pytest
import yaml

from conceptengine.config import ConfigError, EngineConfig, load_config
from conceptengine.pipelines.demo import retrain_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_demo_yaml_equals_embedded_defaults():
    assert load_config(ROOT / "configs" / "demo.yaml") == EngineConfig()


def test_real_run_template_validates():
    cfg = load_config(ROOT / "configs" / "sa-co-image.yaml")
    assert cfg.sam3.model == "facebook/sam3"
    assert cfg.sam3.stage.num_gpus == 1
    assert cfg.media.source == "files"


def test_overrides_keep_types():
    cfg = load_config(None, ["rounds.count=3", "sam3.stage.num_gpus=0.5", "runner=local"])
    assert cfg.rounds.count == 3
    assert cfg.sam3.stage.num_gpus == 0.5
    assert cfg.runner == "local"


def test_unknown_key_names_its_dotted_path(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"sam3": {"stage": {"batch_sise": 4}}}))
    with pytest.raises(ConfigError, match=r"sam3\.stage\.batch_sise: unknown key"):
        load_config(p)


def test_override_of_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match=r"rounds\.cuont: unknown key"):
        load_config(None, ["rounds.cuont=2"])


def test_mistyped_value_names_the_key():
    with pytest.raises(ConfigError, match=r"rounds\.count"):
        load_config(None, ["rounds.count=many"])


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["rounds.count"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("rounds: {count: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_files_source_needs_uri():
    with pytest.raises(ConfigError, match="media.uri is required"):
        load_config(None, ["media.source=files"])


def test_a_files_pool_without_ontology_captions_or_gold_is_refused_before_the_run():
    files = ["media.source=files", "media.uri=/data/*.jpg"]
    with pytest.raises(
        ConfigError,
        match=r"set ontology\.path \(.*\), ontology\.captions_path \(.*\) and media\.gold_json \(SA-Co/Gold",
    ):
        load_config(None, files)
    with pytest.raises(
        ConfigError, match=r"set ontology\.captions_path \(your captioner's output.*\) and media"
    ):
        load_config(None, [*files, "ontology.path=onto.yaml"])
    complete = [*files, "ontology.path=onto.yaml", "ontology.captions_path=c.json"]
    with pytest.raises(ConfigError, match=r"so set media\.gold_json \(SA-Co/Gold JSON of your gold split\)$"):
        load_config(None, complete)
    assert load_config(None, [*complete, "media.gold_json=gold.json"])


def test_config_hash_changes_with_content():
    assert EngineConfig().config_hash() == EngineConfig().config_hash()
    assert EngineConfig().config_hash() != load_config(None, ["seed=1"]).config_hash()


def test_training_template_validates():
    from conceptengine.training.sam3_ray import load_train_config

    cfg = load_train_config(ROOT / "configs" / "train-sam3.yaml", ["steps=5"])
    assert cfg.steps == 5 and cfg.freeze_vision and len(cfg.shards) == 3


def test_shifted_share_must_be_a_share():
    assert load_config(None, ["media.sim.shifted_share=0"]).media.sim.shifted_share == 0.0
    for bad in ("1.5", "-0.1"):
        with pytest.raises(ConfigError, match=r"media\.sim\.shifted_share: .*between 0 and 1"):
            load_config(None, [f"media.sim.shifted_share={bad}"])
    with pytest.raises(ConfigError, match=r"media\.sim\.shifted_share"):
        load_config(None, ["media.sim.shifted_share=half"])


def test_demo_reports_half_its_world_in_the_shifted_look():
    cfg = EngineConfig()
    assert cfg.media.sim.shifted_share == 0.5
    assert cfg.gold.report_domain is None  # `conceptengine demo` sets it to the shifted domain


def test_retrain_replay_keys():
    cfg = EngineConfig()
    assert cfg.retrain.replay_annotations is None and cfg.retrain.replay_share == 0.0  # no replay
    for bad in ("1", "1.5", "-0.1"):
        with pytest.raises(ConfigError, match=r"retrain\.replay_share"):
            load_config(None, ["retrain.replay_annotations=base.parquet", f"retrain.replay_share={bad}"])
    with pytest.raises(ConfigError, match=r"retrain\.replay_annotations is not set"):
        load_config(None, ["retrain.replay_share=0.5"])
    # `conceptengine demo` replays the shipped checkpoint's own data; the template documents the keys.
    from conceptengine.pipelines.demo import DEMO_REPLAY_ANNOTATIONS, retrain_overrides

    demo = load_config(None, retrain_overrides()).retrain
    assert demo.replay_annotations == DEMO_REPLAY_ANNOTATIONS and 0 < demo.replay_share < 1
    assert demo.presence_fit_images > 0  # candidates refit their operating point on the replay set
    assert demo.token_embedding_lr_scale > 1  # the held-out family's words start untrained
    assert demo.freeze_replay_tokens and demo.replay_spread  # ... and only they learn
    with pytest.raises(ConfigError, match=r"retrain\.freeze_replay_tokens is true but retrain\.replay_annot"):
        load_config(None, ["retrain.freeze_replay_tokens=true"])
    with pytest.raises(
        ConfigError, match=r"retrain\.presence_fit_images is 60 but retrain\.replay_annotations"
    ):
        load_config(None, ["retrain.presence_fit_images=60"])
    template = (ROOT / "configs" / "sa-co-image.yaml").read_text()
    assert "  # replay_annotations:" in template and "  # replay_share:" in template
    uncommented = EngineConfig.model_validate(yaml.safe_load(template.replace("# replay_", "replay_")))
    assert uncommented.retrain.replay_annotations and uncommented.retrain.replay_share > 0


def test_replay_path_resolves_against_the_workspace_and_is_checked_before_round_1(tmp_path):
    from types import SimpleNamespace

    from conceptengine.round.context import RunError
    from conceptengine.round.driver import check_replay
    from conceptengine.round.retrain_sam3 import replay_path

    def ctx(*overrides):
        return SimpleNamespace(cfg=load_config(None, list(overrides)), workspace=tmp_path)

    on = ("retrain.replay_annotations=replay/pairs.parquet", "retrain.replay_share=0.5")
    assert replay_path(ctx(*on)) == str(tmp_path / "replay" / "pairs.parquet")
    assert replay_path(ctx("retrain.replay_annotations=/abs/pairs.parquet", "retrain.replay_share=0.5")) == (
        "/abs/pairs.parquet"
    )
    assert replay_path(ctx("retrain.replay_annotations=replay/pairs.parquet")) is None  # share 0: no replay
    with pytest.raises(RunError, match=r"retrain\.replay_annotations: nothing at .*replay/pairs\.parquet"):
        check_replay(ctx(*on))
    check_replay(ctx(*on, "retrain.enabled=false"))  # no retraining, nothing to replay
    (tmp_path / "replay").mkdir()
    (tmp_path / "replay" / "pairs.parquet").write_bytes(b"")
    check_replay(ctx(*on))


def test_the_captioner_is_one_key_and_each_choice_names_what_it_reads():
    files = ["media.source=files", "media.uri=/data/*.jpg", "media.gold_json=g.json", "ontology.path=o.yaml"]
    # No captions file: a model or the ontology itself may supply the positive candidates.
    assert load_config(None, [*files, "ontology.captioner=ontology"]).ontology.positives_from == "ontology"
    with pytest.raises(
        ConfigError, match=r"ontology\.captioner is 'model', so set ontology\.captioner_model"
    ):
        load_config(None, [*files, "ontology.captioner=model"])
    with pytest.raises(ConfigError, match=r"ontology\.captioner is 'file', so set ontology\.captions_path"):
        load_config(None, [*files, "ontology.captioner=file"])
    cfg = load_config(
        None, [*files, "ontology.captioner=model", "ontology.captioner_model=Qwen/Qwen2.5-VL-7B-Instruct"]
    )
    assert cfg.ontology.positives_from == "model"
    assert load_config(None, [*files, "ontology.captions_path=c.json"]).ontology.positives_from == "file"
    assert load_config(None, []).ontology.positives_from is None  # the rendered world's oracle


def test_verifier_retrain_tasks_default_to_both_and_the_demo_retrains_mv_only():
    assert load_config(None).verifier_retrain.tasks == ["mv", "ev"]
    assert load_config(None, retrain_overrides()).verifier_retrain.tasks == ["mv"]
    assert load_config(
        None, [*retrain_overrides(), "verifier_retrain.tasks=[mv,ev]"]
    ).verifier_retrain.tasks == [
        "mv",
        "ev",
    ]
    for bad in ("verifier_retrain.tasks=[]", "verifier_retrain.tasks=[mv,xx]"):
        with pytest.raises(ConfigError, match="verifier_retrain.tasks"):
            load_config(None, [bad])
