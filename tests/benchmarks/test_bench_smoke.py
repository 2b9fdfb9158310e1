import json
import os

import pytest
import torch

from tests.benchmarks import scripts

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_bench():
    return scripts.load_bench("bench_sam3_proposals")


def test_small_benchmark_prints_one_json_line(tmp_path, capsys):
    bench = load_bench()
    argv = ["--images", "2", "--nps", "1,3", "--repeats", "1", "--image-size", "112", "--pool", "8"]
    bench.main([*argv, "--workdir", str(tmp_path)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    figures = json.loads(last)
    assert figures["mode"] == "small" and figures["device"] == "cpu"
    for n in (1, 3):
        row = figures[f"nps_{n}"]
        assert row["pairs"] == 2 * n
        assert row["naive_pairs_per_s"] > 0 and row["engine_pairs_per_s"] > 0
        assert row["ratio"] == pytest.approx(row["engine_pairs_per_s"] / row["naive_pairs_per_s"], rel=0.05)
        assert row["instances_naive"] == row["instances_engine"]  # same inputs, same threshold, same answer
    assert figures["text_cache"]["hits"] > 0  # NPs recur across the images of a run


def test_bad_arguments_and_full_without_gpu(tmp_path):
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse(["--nps", "0"])
    with pytest.raises(SystemExit):
        bench.parse(["--threshold", "2"])
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: --full would run for real")
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        bench.main(["--full", "--images", "1", "--nps", "1", "--workdir", str(tmp_path)])
