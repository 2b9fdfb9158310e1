"""bench_human_cost runs the same pool twice and reports seconds per committed pair as one JSON line."""

import json

import pytest

from tests.benchmarks import scripts


def load_bench():
    return scripts.load_bench("bench_human_cost")


@pytest.mark.slow
def test_two_runs_on_one_pool_print_one_json_line(tmp_path, capsys):
    bench = load_bench()
    bench.main(["--images-per-round", "3", "--rounds", "2", "--workdir", str(tmp_path)])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    human, engine = figures["all_human"], figures["engine"]
    assert human["all_rounds"]["human_share_per_round"] == [1.0, 1.0]
    # The same pool, proposals and reviewers: both runs commit the same pairs.
    assert human["all_rounds"]["committed_pairs"] == engine["all_rounds"]["committed_pairs"] > 0
    assert human["steady_state"]["rounds"] == [2]
    per_pair = human["all_rounds"]["seconds_per_pair"]
    assert per_pair == pytest.approx(
        human["all_rounds"]["human_seconds"] / human["all_rounds"]["committed_pairs"], abs=0.01
    )
    # Three images per round give far fewer verdicts than routing.min_calibration_items: with no evidence
    # the engine may decide nothing itself, so it costs exactly what the all-human pipeline costs.
    assert engine["all_rounds"]["human_seconds"] == human["all_rounds"]["human_seconds"]
    assert figures["ratio"] == 1.0


def test_fewer_than_two_rounds_is_refused():
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse(["--rounds", "1"])
