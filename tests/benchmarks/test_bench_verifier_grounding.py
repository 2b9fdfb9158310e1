import json

import numpy as np
import pytest

from tests.benchmarks import scripts


def load_bench():
    return scripts.load_bench("bench_verifier_grounding")


def test_a_small_run_reports_auc_per_kind_swap_and_agreement(tmp_path, capsys) -> None:
    bench = load_bench()
    argv = ["--train-images", "6", "--test-images", "4", "--steps", "4", "--batch-size", "32",
            "--ev-steps", "3", "--ev-batch-size", "8", "--threads", "1"]  # fmt: skip
    bench.main([*argv, "--workdir", str(tmp_path), "--save", str(tmp_path / "saved")])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= figures["mv_auc"] <= 1 and figures["mv_train"]["steps"] == 4
    assert "mask_quality" in figures["mv_auc_per_kind"]
    refused = sum(k["refused"] for k in figures["mv_auc_per_kind"].values())
    assert refused + figures["mv_test_accepted"] == figures["mv_test_items"]
    assert figures["mv_image_swap"] >= 0 and set(figures["mv_agreement_per_choice"]) <= {"Accept", "Reject"}
    swap = figures["mv_image_swap_per_answer"]
    accepted, items = figures["mv_test_accepted"], figures["mv_test_items"]
    overall = (swap.get("Accept", 0) * accepted + swap.get("refused", 0) * (items - accepted)) / items
    assert overall == pytest.approx(figures["mv_image_swap"], abs=1e-3)  # the overall mean, split by answer
    assert figures["mv_image_swap_balanced"] == pytest.approx(np.mean(list(swap.values())), abs=1e-3)
    assert figures["ev_train"]["steps"] == 3 and figures["ev_image_swap"] >= 0
    ev_kinds = figures["ev_auc_per_kind"]
    assert set(ev_kinds) <= {"missed_some", "missed_all", "missed_instance"} and "missed_instance" in ev_kinds
    assert ev_kinds["missed_instance"]["refused"] + figures["ev_test_accepted"] == figures["ev_test_items"]
    assert set(figures["ev_judge_accuracy"]) == {"leaf", "colour", "pattern"}
    assert figures["ev_candidate_recall"] is None or 0 <= figures["ev_candidate_recall"] <= 1
    assert (tmp_path / "saved" / "mv" / "model.safetensors").exists()
    assert (tmp_path / "saved" / "ev" / "model.safetensors").exists()
    # the saved scorers, scored without training: the same figures on the same test world
    again = bench.main(["--test-images", "4", "--threads", "1", "--workdir", str(tmp_path / "again"),
                        "--scorers", str(tmp_path / "saved")])  # fmt: skip
    assert not (tmp_path / "again" / f"world-{bench.TRAIN_SEED}").exists() and "mv_train" not in again
    for key in ("mv_auc", "mv_image_swap", "ev_auc", "ev_image_swap", "ev_judge_accuracy"):
        assert again[key] == pytest.approx(figures[key], abs=1e-6), key


def test_bad_arguments_are_refused() -> None:
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse(["--steps", "0"])
    with pytest.raises(SystemExit):
        bench.parse(["--tasks", "mv,xx"])
