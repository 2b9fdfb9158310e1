"""scripts/train_demo_grounded_verifiers.py at toy size: both scorers trained, scored and saved loadable."""

import json
import sys
from pathlib import Path

import pytest

from conceptengine.verifiers.backend_factory import make_backend
from conceptengine.verifiers.settings import BackendParams

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import train_demo_grounded_verifiers as script


def test_a_toy_run_ships_both_scorers_with_their_metrics(tmp_path) -> None:
    argv = ["--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--n-train", "8", "--n-test", "6",
            "--steps-mv", "3", "--steps-ev", "2", "--judge-steps-ev", "2", "--batch-mv", "8", "--batch-ev", "4",
            "--threads", "1"]  # fmt: skip
    assert script.main(argv) == 0
    for task in ("mv", "ev"):
        shipped = tmp_path / "out" / task
        metrics = json.loads((shipped / "metrics.json").read_text())
        assert metrics["training"]["steps"] == (3 if task == "mv" else 2) and metrics["test"]["n"] > 0
        assert metrics["curve"] and "auroc_p_accept" in metrics["test"]
        assert set(metrics["auroc_p_accept_by_source"]) == {
            "proposer",
            "oracle",
        }  # the demo SAM 3's masks too
        assert make_backend(BackendParams(), str(shipped)).task == task  # the engine loads what ships
    ev = json.loads((tmp_path / "out" / "ev" / "metrics.json").read_text())
    assert "candidate_recall" in ev["halves"] and ev["training"]["judge"]["steps"] == 2


def test_one_task_alone_leaves_the_other_scorer_untouched(tmp_path) -> None:
    argv = ["--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--n-train", "8", "--n-test", "6",
            "--steps-mv", "2", "--batch-mv", "8", "--threads", "1", "--tasks", "mv"]  # fmt: skip
    assert script.main(argv) == 0
    assert (tmp_path / "out" / "mv" / "model.safetensors").exists() and not (tmp_path / "out" / "ev").exists()
    with pytest.raises(SystemExit, match="2"):
        script.main([*argv[:-1], "mv,sam3"])


def test_a_silhouette_ev_learns_its_foreground_first_and_ships_it(tmp_path) -> None:
    argv = ["--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--n-train", "8", "--n-test", "6",
            "--steps-ev", "2", "--judge-steps-ev", "2", "--fg-steps-ev", "2", "--batch-ev", "4", "--threads", "1",
            "--tasks", "ev", "--ev-silhouette", "--ev-centre-offsets", "--proposer", "none"]  # fmt: skip
    assert script.main(argv) == 0
    shipped = tmp_path / "out" / "ev"
    metrics = json.loads((shipped / "metrics.json").read_text())
    assert metrics["training"]["foreground"]["steps"] == 2 and "foreground_iou" in metrics["halves"]
    config = json.loads((shipped / "config.json").read_text())
    assert config["silhouette"] is True and config["centre_offsets"] is True
    assert "centre_error_px" in metrics["halves"]
    assert make_backend(BackendParams(), str(shipped)).task == "ev"
