import json

import pytest

from tests.benchmarks import scripts


def load_bench():
    return scripts.load_bench("bench_verifier_grounding")


def test_a_small_run_reports_auc_per_kind_swap_and_agreement(tmp_path, capsys) -> None:
    bench = load_bench()
    argv = [
        "--train-images",
        "6",
        "--test-images",
        "4",
        "--steps",
        "4",
        "--batch-size",
        "32",
        "--threads",
        "1",
    ]
    bench.main([*argv, "--workdir", str(tmp_path), "--save", str(tmp_path / "mv")])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= figures["mv_auc"] <= 1 and figures["train"]["steps"] == 4
    assert "mask_quality" in figures["mv_auc_per_kind"]
    assert (
        sum(k["refused"] for k in figures["mv_auc_per_kind"].values()) + figures["test_accepted"]
        == (figures["test_items"])
    )
    assert figures["mv_image_swap"] >= 0 and set(figures["mv_agreement_per_choice"]) <= {"Accept", "Reject"}
    assert (tmp_path / "mv" / "model.safetensors").exists()


def test_bad_arguments_are_refused() -> None:
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse(["--steps", "0"])
