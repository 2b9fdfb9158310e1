"""Checkpoints of a run directory on S3 (a local moto server): trained into a local mirror, published to the
run, and loaded from their URL by a machine that never saw them."""

import shutil
from pathlib import Path

import pytest

from conceptengine.engine.checkpoints import CACHE_ENV, COMPLETE, local_checkpoint
from conceptengine.engine.store import RunStore
from conceptengine.model.sam3_backend import Sam3Detector
from tests.s3_server import local_s3

SHIPPED = Path(__file__).resolve().parents[2] / "conceptengine" / "assets" / "sam3-demo"


def test_a_published_checkpoint_loads_by_url_on_a_machine_without_it(tmp_path, monkeypatch):
    with local_s3() as (bucket, _):
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "trainer-machine"))
        store = RunStore(f"s3://{bucket}/run")
        work = Path(store.workdir("models", "sam3", "v0001"))
        assert work.is_relative_to(tmp_path / "trainer-machine")  # trained locally, not in the bucket
        shutil.copytree(SHIPPED, work)
        (work / "checkpoints" / "step-5").mkdir(parents=True)
        (work / "checkpoints" / "step-5" / "optimizer.pt").write_bytes(b"resume state")

        url = store.publish_dir(str(work), "models/sam3/v0001")

        assert url == f"s3://{bucket}/run/models/sam3/v0001"
        uploaded = {Path(p).name for p in store.fs.find(store.path("models/sam3/v0001"))}
        assert uploaded == {p.name for p in SHIPPED.iterdir()}  # the trainer's resume state stays local
        assert local_checkpoint(url) == str(work)  # the machine that trained it loads its own copy

        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "other-machine"))
        fetched = Path(local_checkpoint(url))
        assert fetched.is_relative_to(tmp_path / "other-machine") and (fetched / COMPLETE).exists()
        for f in SHIPPED.iterdir():
            assert (fetched / f.name).read_bytes() == f.read_bytes()
        detector = Sam3Detector.from_pretrained(url)  # what a stage's actor on another node does
        shipped = Sam3Detector.from_pretrained(str(SHIPPED))
        for (name, a), (_, b) in zip(
            detector.model.state_dict().items(), shipped.model.state_dict().items(), strict=True
        ):
            assert a.equal(b), name

        (fetched / "model.safetensors").unlink()  # a mirror marked complete is trusted, not fetched again
        assert local_checkpoint(url) == str(fetched) and not (fetched / "model.safetensors").exists()


def test_a_remote_checkpoint_that_does_not_exist_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with (
        local_s3() as (bucket, _),
        pytest.raises(FileNotFoundError, match=f"s3://{bucket}/run/models/sam3/v0009"),
    ):
        local_checkpoint(f"s3://{bucket}/run/models/sam3/v0009")


def test_local_paths_and_hub_ids_pass_through():
    assert local_checkpoint("/data/models/sam3") == "/data/models/sam3"
    assert local_checkpoint("facebook/sam3") == "facebook/sam3"
    assert local_checkpoint("file:///data/models/sam3") == "file:///data/models/sam3"
