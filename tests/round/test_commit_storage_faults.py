"""COMMIT on a disk that fills up or turns read-only: one clear error, nothing half-written, and a resume
that commits exactly what an uninterrupted commit does. The disk is a real tmpfs mounted for the test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conceptengine.config import load_config
from conceptengine.engine.round_steps import Step
from conceptengine.engine.runner import make_runner
from conceptengine.engine.steps import StepResult
from conceptengine.engine.store import RunStore, RunStoreWriteError, StepRef
from conceptengine.engine.tables import VERDICTS
from conceptengine.pipelines.export import committed_annotations
from conceptengine.round.commit import commit_round, committed_shards
from conceptengine.round.context import RunContext
from tests.round.test_commit import H, W, _decisions, _routed, _stored


def _mount(point: Path, options: str) -> bool:
    command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)]
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs: room for the run's tables, not for its shards of incompressible images."""
    point = tmp_path / "disk"
    point.mkdir()
    if not _mount(point, "size=64k"):
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _remount(point: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(point)], check=True)


def _commit(tmp_path: Path, run_dir: Path) -> StepResult:
    """Round 1's COMMIT of test_commit's pairs, over two 160x120 noise images (~58 KB each as PNG)."""
    uris = {}
    for i, m in enumerate(("m1", "m2")):
        path = tmp_path / f"{m}.png"
        if not path.exists():
            noise = np.random.default_rng(i).integers(0, 256, (120, 160, 3), dtype=np.uint8)
            noise[:H, :W] = 0
            Image.fromarray(noise).save(path)
        uris[m] = str(path)
    ctx = RunContext(
        load_config(None, ["runner=local"]), RunStore(str(run_dir)), make_runner("local"), tmp_path
    )
    upstream = RunStore(str(tmp_path / "upstream"))  # the finished steps the commit reads, on a good disk
    routed = _stored(upstream, StepRef(1, Step.ROUTE), {"routed": _routed(uris)})
    review = {"decisions": _decisions(), "verdicts": VERDICTS.empty_table()}
    return commit_round(ctx, 1, routed, _stored(upstream, StepRef(1, Step.HUMAN_REVIEW), review))


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_commit_that_cannot_write_fails_clearly_keeps_nothing_half_written_and_resumes(
    fault, small_disk, tmp_path
):
    reference = _commit(tmp_path, tmp_path / "reference-run")
    run_dir = small_disk / "run"
    if fault == "read-only":
        RunStore(str(run_dir))  # the run exists; then its disk turns read-only under it
        _remount(small_disk, "ro")
    with pytest.raises(RunStoreWriteError) as failed:
        _commit(tmp_path, run_dir)
    message = str(failed.value)
    assert ("No space left on device" if fault == "full" else "Read-only file system") in message
    assert "--resume" in message and str(run_dir) in message

    assert not any(name.endswith(".tmp") for name in _files(run_dir))  # no half-written file anywhere
    assert not (run_dir / "round-0001" / "commit" / "_SUCCESS.json").exists()
    store = RunStore(str(run_dir))  # read as export and verifier training read a run
    assert committed_annotations(store).num_rows == 0 and committed_shards(store) == []  # nothing committed

    _remount(small_disk, "rw,size=8m")  # the user frees space / fixes the mount, then resumes
    resumed = _commit(tmp_path, run_dir)
    assert not resumed.reused
    assert resumed["annotations"].equals(reference["annotations"])
    without_time = {k: v for k, v in reference.manifest["extra"].items() if k != "seconds"}
    assert {k: v for k, v in resumed.manifest["extra"].items() if k != "seconds"} == without_time
    assert _files(run_dir) == _files(tmp_path / "reference-run")
    for rel in _files(run_dir):
        if not rel.endswith("_SUCCESS.json"):  # the manifest holds the step's time
            assert (run_dir / rel).read_bytes() == (tmp_path / "reference-run" / rel).read_bytes(), rel
    assert committed_annotations(store).num_rows == 4 and len(committed_shards(store)) == 1
