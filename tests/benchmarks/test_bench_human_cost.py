"""bench_human_cost runs the same pool twice and reports seconds per committed pair as one JSON line."""

import json

import pytest

from conceptengine.engine.store import RunStore, StepRef
from tests.benchmarks import scripts


def load_bench():
    return scripts.load_bench("bench_human_cost")


@pytest.mark.slow
def test_once_calibrated_the_engine_decides_items_and_humans_pay_less(tmp_path, capsys):
    bench = load_bench()
    # Ten images a round give ~70 MV and ~110 EV verdicts, below the default bar (100 calibration items at
    # 95% precision): the bar is lowered to what they can certify, so round 2 shows routing at work.
    lowered = ["--set", "routing.min_calibration_items=20", "--set", "routing.target_precision=0.6"]
    bench.main(["--images-per-round", "10", "--rounds", "2", "--workdir", str(tmp_path), *lowered])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    human, engine = figures["all_human"], figures["engine"]
    assert human["all_rounds"]["human_share_per_round"] == [1.0, 1.0]
    # Round 1 has no calibration data, so humans see everything; in round 2 the verifiers decide some items.
    shares = engine["all_rounds"]["human_share_per_round"]
    assert shares[0] == 1.0 and shares[1] < 1.0
    assert engine["steady_state"]["human_seconds"] < human["steady_state"]["human_seconds"]
    # The same pool, proposals and reviewers: both runs commit the same pairs, the engine's by fewer seconds.
    assert human["all_rounds"]["committed_pairs"] == engine["all_rounds"]["committed_pairs"] > 0
    assert human["steady_state"]["rounds"] == engine["steady_state"]["rounds"] == [2]
    # Every figure comes from what the runs stored: human verdicts' seconds over committed annotations.
    per_pair = {}
    for name in ("all_human", "engine"):
        for scope, rounds in (("all_rounds", [1, 2]), ("steady_state", [2])):
            seconds, pairs = _stored(tmp_path / f"run-{name}", rounds)
            fig = figures[name][scope]
            assert fig["human_seconds"] == pytest.approx(seconds, abs=0.1 * len(rounds))
            assert fig["committed_pairs"] == pairs
            assert fig["seconds_per_pair"] == pytest.approx(seconds / pairs, abs=0.02)
            per_pair[name, scope] = seconds / pairs
    ratio = per_pair["all_human", "steady_state"] / per_pair["engine", "steady_state"]
    assert figures["ratio"] == pytest.approx(ratio, rel=0.01) and figures["ratio"] > 1.0


def _stored(run_dir, rounds: list[int]) -> tuple[float, int]:
    """(seconds of the human verdicts, committed pairs) of these rounds, read from the run's own files."""
    store = RunStore(str(run_dir))
    seconds, pairs = 0.0, 0
    for r in rounds:
        verdicts = store.read_step(StepRef(r, "commit"), "verdicts").to_pylist()
        seconds += sum(v["seconds"] for v in verdicts if not v["annotator"].startswith("ai:"))
        pairs += store.read_step(StepRef(r, "commit"), "annotations").num_rows
    return seconds, pairs


def test_fewer_than_two_rounds_is_refused():
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse(["--rounds", "1"])
