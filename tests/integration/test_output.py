"""What `conceptengine run` prints when its output is not a terminal (CI logs, files): one plain line per
finished step with its counts, the round table, and none of Ray's or transformers' own chatter unless
--verbose asks for it."""

import signal
import subprocess
import sys
import time

from tests.integration.conftest import write_config

NOISE = (
    "Loading weights",
    "core_worker.cc",
    "Token authentication",
    "FutureWarning",
    "UserWarning",
    "Progress bars disabled",
)


def _run(*args: str) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-m", "conceptengine.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=420)  # ~80 s normally; under pytest-timeout's 600 s
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # the CLI prints every thread's stack: where the run waits
        time.sleep(3)
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(
            f"`conceptengine {' '.join(args)}` still running after 420 s:\n{out[-8000:]}"
        ) from None
    assert proc.returncode == 0, out[-6000:]
    return out


def test_a_piped_run_prints_plain_step_lines_and_no_third_party_noise(small_workspace, tmp_path):
    config = write_config(
        small_workspace,
        "output.yaml",
        [
            "runner=ray",
            "rounds.count=1",
            "retrain.enabled=true",
            "retrain.every_rounds=1",
            "retrain.steps=20",
        ],
    )
    out = _run("run", str(config), "--run-dir", str(tmp_path / "run"))
    assert not [noise for noise in NOISE if noise in out], out
    lines = out.splitlines()
    assert any(line.startswith("[1/") and "round-0000/ingest done" in line for line in lines), out
    assert any("round-0001/propose_nps done" in line and "· pairs " in line for line in lines), out
    assert any("round-0001/retrain done" in line for line in lines), out
    assert "conceptengine rounds" in out


def test_verbose_lets_third_party_output_through(small_workspace, tmp_path):
    config = write_config(small_workspace, "verbose.yaml", ["rounds.count=1"])
    out = _run("--verbose", "run", str(config), "--run-dir", str(tmp_path / "run"))
    assert "Loading weights" in out, out  # transformers' bar for each checkpoint it loads
