"""`run --resume` after a kill -9 of the driver commits exactly what an uninterrupted run commits."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conceptengine.engine.round_steps import Step
from conceptengine.engine.store import RunStore, StepRef
from conceptengine.pipelines.export import committed_annotations
from tests.integration.conftest import write_config


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "conceptengine.cli", *args]


def _run_to_end(config: Path, run_dir: Path, resume: bool = False) -> None:
    args = ["run", str(config), "--run-dir", str(run_dir)] + (["--resume"] if resume else [])
    done = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _kill_when(config: Path, run_dir: Path, ready, resume: bool = False) -> None:
    proc = subprocess.Popen(
        _cli("run", str(config), "--run-dir", str(run_dir), *(["--resume"] if resume else [])),
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
    _run_to_end(config, run_dir)
    return config, run_dir


def committed_files(run_dir: Path) -> dict[str, bytes]:
    """The committed dataset's files, byte for byte: the annotation and verdict blocks and WebDataset shards
    every COMMIT manifest lists."""
    store = RunStore(str(run_dir))
    files = {}
    for r in store.rounds_with(Step.COMMIT):
        ref = StepRef(r, Step.COMMIT)
        for rel in (f for listed in store.manifest(ref)["files"].values() for f in listed):
            files[f"{ref.rel}/{rel}"] = (run_dir / ref.rel / rel).read_bytes()
    return files


def _mid_review(run_dir: Path):
    # The queue has answers but the review step has not finished.
    return lambda: (
        (run_dir / "review.db").exists() and (run_dir / "round-0001" / "route" / "_SUCCESS.json").exists()
    )


def _second_round_commit(run_dir: Path):
    # Round 2's annotations are being written; its commit manifest may or may not exist yet.
    return lambda: (run_dir / "round-0002" / "commit" / "annotations").exists()


# Two moments chosen to hurt; seeded random ones are the next test's.
@pytest.mark.parametrize("kill_point", ["mid_review", "second_round_commit"])
def test_kill_minus_9_then_resume_commits_the_same_annotations(reference, tmp_path, kill_point):
    config, reference_dir = reference
    run_dir = tmp_path / "run"
    ready = {"mid_review": _mid_review, "second_round_commit": _second_round_commit}[kill_point](run_dir)
    _kill_when(config, run_dir, ready)  # asserts the driver was still running when it was killed
    _run_to_end(config, run_dir, resume=True)
    got = committed_annotations(RunStore(str(run_dir)))
    assert got.num_rows > 0
    assert got.equals(committed_annotations(RunStore(str(reference_dir))))
    assert committed_files(run_dir) == committed_files(reference_dir)  # byte-identical, shards included


# Three rounds with SAM 3 retraining on (a few steps), so kills land in every kind of step, training included.
# A killed driver's reviewers leave their leases behind; the resumed review takes those tasks back once the
# lease expires (120 s by default: 8 minutes of this test's 10 kills were spent waiting on them).
THREE_ROUNDS = [
    "rounds.count=3",
    "retrain.enabled=true",
    "retrain.steps=6",
    "retrain.batch_size=2",
    "review.lease_ttl_s=2",
]
KILLS = 10


def _steps_done(run_dir: Path) -> int:
    return len(list(run_dir.glob("round-*/*/_SUCCESS.json")))


def test_ten_kills_across_three_rounds_commit_what_an_uninterrupted_run_commits(small_workspace, tmp_path):
    """The driver is killed -9 at 10 seeded moments spread over a 3-round run (once a seeded number of steps
    is done, then a seeded fraction of a second into the next), resumed after each; the dataset it ends
    with is the uninterrupted run's, byte for byte."""
    config = write_config(small_workspace, "three-rounds.yaml", THREE_ROUNDS)
    reference_dir = tmp_path / "reference"
    _run_to_end(config, reference_dir)
    total = _steps_done(reference_dir)
    rng = random.Random(16)
    # Kill points spread over the run, clear of its last steps (a run that ends first proves nothing).
    after_steps = sorted(rng.sample(range(1, total - 4), KILLS))
    run_dir = tmp_path / "run"
    killed_at = []
    for i, target in enumerate(after_steps):
        delay = rng.uniform(0.0, 0.5)
        reached: dict[str, float] = {}  # when the run got to `target` steps

        def ready(target=target, delay=delay, reached=reached) -> bool:
            if _steps_done(run_dir) < target:
                return False
            since = reached.setdefault("at", time.monotonic())
            return time.monotonic() - since >= delay

        _kill_when(config, run_dir, ready, resume=i > 0)
        killed_at.append(_steps_done(run_dir))
    assert killed_at[-1] < total, killed_at
    _run_to_end(config, run_dir, resume=True)
    assert _steps_done(run_dir) == total
    assert committed_files(run_dir) == committed_files(reference_dir)
    assert committed_annotations(RunStore(str(run_dir))).equals(
        committed_annotations(RunStore(str(reference_dir)))
    )


def test_resume_with_a_changed_config_is_refused(reference, small_workspace, tmp_path):
    _, reference_dir = reference
    run_dir = tmp_path / "run"
    shutil.copytree(reference_dir, run_dir)  # a finished run of the config (the reference is left as it is)
    other = write_config(small_workspace, "other.yaml", ["seed=5"])
    done = subprocess.run(
        _cli("run", str(other), "--run-dir", str(run_dir), "--resume"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "different config" in done.stdout
