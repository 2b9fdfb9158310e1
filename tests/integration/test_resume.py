"""`run --resume` after a kill -9 of the driver commits exactly what an uninterrupted run commits."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conceptengine.engine.store import RunStore
from conceptengine.pipelines.export import committed_annotations
from conceptengine.round.commit import committed_shards
from tests.integration.conftest import write_config


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "conceptengine.cli", *args]


def _run_to_end(config: Path, run_dir: Path, resume: bool = False) -> float:
    started = time.monotonic()
    args = ["run", str(config), "--run-dir", str(run_dir)] + (["--resume"] if resume else [])
    done = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return time.monotonic() - started


def _kill_when(config: Path, run_dir: Path, ready) -> None:
    proc = subprocess.Popen(
        _cli("run", str(config), "--run-dir", str(run_dir)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before the kill point; the test proves nothing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def reference(small_workspace, tmp_path_factory):
    config = write_config(small_workspace, "resume.yaml")
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    seconds = _run_to_end(config, run_dir)
    return config, run_dir, seconds


def committed_files(run_dir: Path) -> dict[str, bytes]:
    """The committed dataset's files, byte for byte: annotation partitions and WebDataset shards."""
    store = RunStore(str(run_dir))
    shards = [Path(p) for p in committed_shards(store)]
    parts = sorted((run_dir / "annotations").rglob("*.parquet"))
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in parts + shards}


def _mid_review(run_dir: Path):
    # The queue has answers but the review step has not finished.
    return lambda: (
        (run_dir / "review.db").exists() and (run_dir / "round-0001" / "route" / "_SUCCESS.json").exists()
    )


def _second_round_commit(run_dir: Path):
    # Round 2's annotations are being written; its commit manifest may or may not exist yet.
    return lambda: (run_dir / "annotations" / "round=0002").exists()


@pytest.mark.parametrize("kill_point", ["random", "mid_review", "second_round_commit"])
def test_kill_minus_9_then_resume_commits_the_same_annotations(reference, tmp_path, kill_point):
    config, reference_dir, seconds = reference
    run_dir = tmp_path / "run"
    if kill_point == "random":
        at = time.monotonic() + random.Random(7).uniform(0.3, 0.9) * seconds
        ready = lambda: time.monotonic() >= at
    else:
        ready = {"mid_review": _mid_review, "second_round_commit": _second_round_commit}[kill_point](run_dir)
    _kill_when(config, run_dir, ready)  # asserts the driver was still running when it was killed
    _run_to_end(config, run_dir, resume=True)
    got = committed_annotations(RunStore(str(run_dir)))
    assert got.num_rows > 0
    assert got.equals(committed_annotations(RunStore(str(reference_dir))))
    assert committed_files(run_dir) == committed_files(reference_dir)  # byte-identical, shards included


def test_resume_with_a_changed_config_is_refused(reference, small_workspace, tmp_path):
    config, _, _ = reference
    run_dir = tmp_path / "run"
    _run_to_end(config, run_dir)
    other = write_config(small_workspace, "other.yaml", ["seed=5"])
    done = subprocess.run(
        _cli("run", str(other), "--run-dir", str(run_dir), "--resume"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "different config" in done.stdout
