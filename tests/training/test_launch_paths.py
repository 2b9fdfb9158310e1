"""Ray Train's workers do not run in the directory the command ran in: a training config's relative local
paths reach them absolute, and URLs and hub ids unchanged."""

from pathlib import Path

from conceptengine.training.launch import _with_absolute_paths
from conceptengine.training.sam3 import TrainSam3Config
from conceptengine.training.verifier import TrainVerifierConfig


def test_relative_paths_reach_the_workers_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ws" / "models" / "sam3").mkdir(parents=True)
    (tmp_path / "ws" / "shards").mkdir()
    (tmp_path / "ws" / "shards" / "train-000100.tar").touch()
    cfg = TrainSam3Config(
        init_checkpoint="ws/models/sam3",
        output_dir="ws/finetuned",  # not made yet: its folder is
        shards=["ws/shards/train-000100.tar", "s3://bucket/run/shards/train-000200.tar"],
    )
    sent = _with_absolute_paths(cfg)
    assert sent["init_checkpoint"] == str(tmp_path / "ws" / "models" / "sam3")
    assert sent["output_dir"] == str(tmp_path / "ws" / "finetuned")
    assert sent["shards"] == [
        str(tmp_path / "ws/shards/train-000100.tar"),
        "s3://bucket/run/shards/train-000200.tar",
    ]
    assert TrainSam3Config.model_validate(sent).shards == sent["shards"]  # workers validate it again

    hub = TrainVerifierConfig(task="mv", init_checkpoint="gpt2", output_dir="out", examples="ex.parquet")
    sent = _with_absolute_paths(hub)
    assert sent["init_checkpoint"] == "gpt2"  # no such folder here: a hub id
    assert sent["output_dir"] == str(Path(tmp_path, "out"))
    assert sent["task"] == "mv"  # only path fields change
