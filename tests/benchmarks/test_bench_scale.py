import json
from pathlib import Path

import pytest

from conceptengine.engine.store import RunStore, StepRef
from conceptengine.round.annotations import decided_without_humans
from tests.benchmarks import scripts


@pytest.mark.slow
def test_a_small_scale_run_streams_every_step_through_block_files_and_prints_one_json_line(tmp_path, capsys):
    bench = scripts.load_bench("bench_scale")
    bench.main(["--sizes", "240", "--repeats", "1", "--workdir", str(tmp_path)])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["bench"] == "scale" and len(figures["stand_ins"]) == 2  # the fast stages say what they are
    (row,) = figures["sizes"]
    assert row["pairs"] == 240 and row["images"] == 20 and row["runs_per_mode"] == 1
    for mode in ("engine", "bare"):
        assert row[mode]["seconds"] > 0 and row[mode]["driver_peak_rss_mb"] > 0
        assert row[mode]["worker_peak_rss_mb"] > 0  # the sampler found Ray's workers
    assert row["engine"]["committed"] == row["bare"]["committed"] > 0  # the same work both ways
    assert row["engine_vs_bare"] == pytest.approx(row["bare"]["seconds"] / row["engine"]["seconds"], rel=0.01)

    # Every step of the engine's run is a block step: its manifest lists the files its workers wrote, and
    # the commit holds exactly the pairs routing decided without a human.
    store = RunStore(str(tmp_path / "run-240"))
    for step in ("propose_nps", "propose_masks", "ai_verify", "route", "commit"):
        manifest = store.manifest(StepRef(1, step))
        listed = manifest["files"][step]
        assert listed and all(f.startswith(f"{step}/part-") for f in listed)
        on_disk = sorted(p.name for p in Path(store.path("round-0001", step, step)).iterdir())
        assert on_disk == sorted(Path(f).name for f in listed)  # no stray file
    assert store.manifest(StepRef(1, "propose_nps"))["rows"]["propose_nps"] == 240
    # NP proposal, masks, verification and routing ran as one stream, as in a round; commit on its own.
    for step, stream in (("propose_nps", 4), ("route", 4), ("commit", 0)):
        assert len(store.manifest(StepRef(1, step))["extra"].get("stream", [])) == stream
    routed = store.read_step(StepRef(1, "route"), "route")
    committed = store.read_step(StepRef(1, "commit"), "commit")
    expected = decided_without_humans(routed)
    assert committed.num_rows == expected.num_rows == row["engine"]["committed"]
    assert sorted(committed["pair_id"].to_pylist()) == sorted(expected["pair_id"].to_pylist())
