"""Consecutive block steps run as one stream: each step still writes its own blocks and manifest, every row
exactly once, and a crash between two manifests resumes from the last one written."""

from __future__ import annotations

import sys
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from ray import cloudpickle

from conceptengine.engine.runner import Link, LocalRunner, RayRunner
from conceptengine.engine.stage import Stage, StageConfig
from conceptengine.engine.steps import BlockStep, run_block_steps
from conceptengine.engine.store import RunStore, StepRef
from tests.engine.test_block_steps import OUT, SquareStage

PLUS = pa.schema([("i", pa.int64()), ("square", pa.int64()), ("plus_one", pa.int64())])


class PlusOneStage(Stage):
    name: ClassVar[str] = "test_plus_one"
    input_columns: ClassVar[tuple[str, ...]] = ("i", "square")
    output_columns: ClassVar[tuple[str, ...]] = ("i", "square", "plus_one")

    def __call__(self, batch: pa.Table) -> pa.Table:
        return batch.append_column("plus_one", pc.add(batch["square"], 1))


TIMES_TEN = PLUS.append(pa.field("times_ten", pa.int64()))


class TimesTenStage(Stage):
    name: ClassVar[str] = "test_times_ten"
    input_columns: ClassVar[tuple[str, ...]] = ("i", "square", "plus_one")
    output_columns: ClassVar[tuple[str, ...]] = ("i", "square", "plus_one", "times_ten")

    def __call__(self, batch: pa.Table) -> pa.Table:
        return batch.append_column("times_ten", pc.multiply(batch["plus_one"], 10))


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import a test module

EVEN = pc.equal(pc.bit_wise_and(pc.field("i"), 1), 0)


class Host:
    """What run_block_steps needs of a run."""

    def __init__(self, url: str, runner):
        self.store = RunStore(url)
        self.config_hash = "cfg"
        self.on_step = None
        self.runner = runner


def _steps(host: Host, n_files: int, rows: int, cpus: float = 0.25) -> list[BlockStep]:
    """squares (i -> i*i) then plus_one (of the even i only), the first step reading files it writes itself."""
    cfg = StageConfig(batch_size=7, num_cpus=cpus)

    def sources(step_url: str):
        urls = []
        for k in range(n_files):
            table = pa.table({"i": pa.array(range(k * rows, (k + 1) * rows), pa.int64())})
            host.store.write_parquet(f"inputs/{k}.parquet", table)
            urls.append(host.store.url_for("inputs", f"{k}.parquet"))
        return urls, {}

    squares = BlockStep(
        StepRef(1, "squares"),
        ["inputs-v1"],
        [Link(SquareStage, cfg)],
        {"squares": None},
        OUT,
        sources=sources,
    )
    plus_one = BlockStep(
        StepRef(1, "plus_one"),
        ["plus-v1"],
        [Link(PlusOneStage, cfg)],
        {"plus_one": None},
        PLUS,
        reads="squares",
        source_filter=EVEN,
        sort_by={"plus_one": "i"},
        extra=lambda files: {"blocks": len(files["plus_one"])},
    )
    return [squares, plus_one]


def _check(results, n: int) -> None:
    squares, plus_one = results
    assert squares["squares"].sort_by("i")["square"].to_pylist() == [i * i for i in range(n)]
    table = plus_one["plus_one"]  # read sorted by i (its sort_by)
    assert table["i"].to_pylist() == list(range(0, n, 2))
    assert table["plus_one"].to_pylist() == [i * i + 1 for i in range(0, n, 2)]
    assert plus_one.manifest["rows"] == {"plus_one": n // 2}
    assert plus_one.manifest["extra"]["blocks"] == len(plus_one.manifest["files"]["plus_one"])


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_two_steps_stream_as_one_and_each_writes_its_own_blocks_and_manifest(tmp_path, kind, request):
    if kind == "ray":
        request.getfixturevalue("ray_session")
    host = Host(str(tmp_path / "run"), LocalRunner() if kind == "local" else RayRunner())
    results = run_block_steps(host, _steps(host, 3, 40))
    _check(results, 120)
    squares, plus_one = results
    for result in results:
        assert result.manifest["extra"]["stream"] == ["squares", "plus_one"]
        assert all(
            f.startswith(f"{result.ref.step}/part-") for f in result.manifest["files"][result.ref.step]
        )
    # The second step's input is the first one's output, as if they had run one after the other.
    again = run_block_steps(host, _steps(host, 3, 40))
    assert [r.reused for r in again] == [True, True]
    assert [r.fingerprint for r in again] == [squares.fingerprint, plus_one.fingerprint]


def test_a_crash_between_the_manifests_reruns_only_the_step_without_one(tmp_path):
    host = Host(str(tmp_path / "run"), LocalRunner())
    first = run_block_steps(host, _steps(host, 2, 30))
    host.store.invalidate(StepRef(1, "plus_one"))  # killed after the first manifest was written
    resumed = run_block_steps(host, _steps(host, 2, 30))
    assert [r.reused for r in resumed] == [True, False]
    assert "stream" not in resumed[1].manifest["extra"]  # it streamed alone, from the first step's files
    assert resumed[1].manifest["files"] == first[1].manifest["files"]  # the same blocks
    _check(resumed, 60)


def test_steps_whose_pools_do_not_fit_side_by_side_run_one_after_another(tmp_path, ray_session):
    host = Host(str(tmp_path / "run"), RayRunner())
    # Each pool claims 0.75 of the 2 CPUs: alone each fits (half the cluster at most), together they do not.
    results = run_block_steps(host, _steps(host, 2, 30, cpus=0.75))
    _check(results, 60)
    assert all("stream" not in r.manifest["extra"] for r in results)


def test_the_longest_run_of_steps_that_fits_streams_and_the_rest_follows(tmp_path, ray_session):
    host = Host(str(tmp_path / "run"), RayRunner())
    times_ten = BlockStep(
        StepRef(1, "times_ten"),
        [],
        [Link(TimesTenStage, StageConfig(batch_size=7, num_cpus=0.75))],
        {"times_ten": None},
        TIMES_TEN,
        reads="plus_one",
    )
    # 0.25 + 0.25 CPUs stream together; the third pool's 0.75 would take the three past half of the 2 CPUs.
    results = run_block_steps(host, [*_steps(host, 2, 30), times_ten])
    _check(results[:2], 60)
    assert [r.manifest["extra"].get("stream") for r in results] == [["squares", "plus_one"]] * 2 + [None]
    last = results[2]["times_ten"].sort_by("i")
    assert last["times_ten"].to_pylist() == [(i * i + 1) * 10 for i in range(0, 60, 2)]


def test_a_step_that_reads_a_filtered_table_of_the_step_before_cannot_stream(tmp_path):
    host = Host(str(tmp_path / "run"), LocalRunner())
    squares, plus_one = _steps(host, 1, 10)
    squares.outputs = {"squares": EVEN}
    with pytest.raises(ValueError, match="plus_one maps .*squares.*'squares' does not"):
        run_block_steps(host, [squares, plus_one])
