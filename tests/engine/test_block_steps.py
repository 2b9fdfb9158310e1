"""Steps whose workers write their tables as block files: every row exactly once, whichever runner, after a
crashed attempt too, on local disk and on S3."""

from __future__ import annotations

import functools
import posixpath
import subprocess
import sys
from typing import ClassVar

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from ray import cloudpickle

from conceptengine.engine.block_files import write_block
from conceptengine.engine.runner import Link, LocalRunner, RayRunner
from conceptengine.engine.stage import Stage, StageConfig
from conceptengine.engine.steps import run_block_step
from conceptengine.engine.store import RunStore, RunStoreWriteError, StepRef
from tests.s3_server import local_s3

OUT = pa.schema([("i", pa.int64()), ("square", pa.int64())])


class SquareStage(Stage):
    name: ClassVar[str] = "test_square"
    input_columns: ClassVar[tuple[str, ...]] = ("i",)
    output_columns: ClassVar[tuple[str, ...]] = ("i", "square")

    def __call__(self, batch: pa.Table) -> pa.Table:
        i = batch["i"]
        return pa.table({"i": i, "square": pc.multiply(i, i)}, schema=OUT)


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import a test module


class Host:
    """What run_block_step needs of a run."""

    def __init__(self, url: str):
        self.store = RunStore(url)
        self.config_hash = "cfg"
        self.on_step = None


def _sources(store: RunStore, n_files: int, rows: int) -> list[str]:
    urls = []
    for k in range(n_files):
        table = pa.table({"i": pa.array(range(k * rows, (k + 1) * rows), pa.int64())})
        store.write_parquet(f"inputs/{k}.parquet", table)
        urls.append(store.url_for("inputs", f"{k}.parquet"))
    return urls


def _step(host: Host, runner, sources: list[str]):
    chain = [Link(SquareStage, StageConfig(batch_size=7))]

    def stream(step_url):
        return runner.stream_chain(chain, sources, step_url, {"squares": None}, OUT), {}

    return run_block_step(host, StepRef(1, "squares"), ["inputs-v1"], stream)


def _check_every_row_once(result, n: int) -> None:
    table = result["squares"].sort_by("i")
    assert table["i"].to_pylist() == list(range(n))
    assert table["square"].to_pylist() == [i * i for i in range(n)]
    assert result.manifest["rows"] == {"squares": n}


def test_local_runner_writes_one_block_file_per_source_and_the_manifest_lists_them(tmp_path):
    host = Host(str(tmp_path / "run"))
    result = _step(host, LocalRunner(), _sources(host.store, 3, 40))
    _check_every_row_once(result, 120)
    listed = result.manifest["files"]["squares"]
    assert len(listed) == 3 and all(f.startswith("squares/part-") for f in listed)
    assert len(result.urls("squares")) == 3
    assert not result.reused and result.tables == {"squares": result["squares"]}  # read on first use


def test_ray_runner_streams_sources_through_actor_pools_and_workers_write_the_blocks(tmp_path, ray_session):
    host = Host(str(tmp_path / "run"))
    sources = _sources(host.store, 4, 250)
    result = _step(host, RayRunner(), sources)
    _check_every_row_once(result, 1000)
    # The same rows as the in-process runner; which rows share a file is Ray's business.
    local = _step(Host(str(tmp_path / "local")), LocalRunner(), sources)
    assert result["squares"].sort_by("i").equals(local["squares"].sort_by("i"))


def test_a_crashed_attempts_files_are_never_read_and_are_removed_when_the_step_finishes(tmp_path):
    host = Host(str(tmp_path / "run"))
    sources = _sources(host.store, 2, 30)
    step_url = host.store.url_for("round-0001", "squares")
    # A crashed attempt: a block written (rows 0..9 twice over would be duplicates), no manifest.
    stale = write_block(step_url, "squares", pa.table({"i": [0, 1], "square": [0, 1]}, schema=OUT))
    assert host.store.manifest(StepRef(1, "squares")) is None
    result = _step(host, LocalRunner(), sources)
    _check_every_row_once(result, 60)
    assert stale["file"] not in result.manifest["files"]["squares"]
    assert not host.store.fs.exists(host.store.path("round-0001", "squares", stale["file"]))
    # Done: a second call reuses it, reading the same files.
    again = _step(host, LocalRunner(), sources)
    assert again.reused and again.fingerprint == result.fingerprint
    _check_every_row_once(again, 60)


def test_a_block_is_named_by_its_content_so_a_retried_write_task_rewrites_the_same_file(tmp_path):
    table = pa.table({"i": [3, 4], "square": [9, 16]}, schema=OUT)
    first = write_block(str(tmp_path), "squares", table)
    second = write_block(str(tmp_path), "squares", table)
    assert first == second
    assert [p.name for p in (tmp_path / "squares").iterdir()] == [posixpath.basename(first["file"])]


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_a_step_with_no_rows_lists_one_empty_file_that_keeps_the_columns(tmp_path, kind, request):
    runner = LocalRunner() if kind == "local" else (request.getfixturevalue("ray_session") and RayRunner())
    host = Host(str(tmp_path / "run"))
    host.store.write_parquet("inputs/empty.parquet", pa.table({"i": pa.array([], pa.int64())}))
    result = _step(host, runner, [host.store.url_for("inputs", "empty.parquet")])
    assert result["squares"].num_rows == 0 and result["squares"].schema.names == ["i", "square"]
    assert result.manifest["rows"] == {"squares": 0}


def test_block_steps_on_s3_write_and_list_their_files_in_the_bucket():
    with local_s3() as (bucket, _env):
        host = Host(f"s3://{bucket}/run")
        result = _step(host, LocalRunner(), _sources(host.store, 2, 25))
        _check_every_row_once(result, 50)
        urls = result.urls("squares")
        assert all(u.startswith(f"s3://{bucket}/run/round-0001/squares/squares/part-") for u in urls)
        with fsspec.open(urls[0], "rb") as f:
            assert pq.read_table(f).num_rows == 25


def test_reading_a_table_the_manifest_does_not_name_fails_clearly(tmp_path):
    host = Host(str(tmp_path / "run"))
    result = _step(host, LocalRunner(), _sources(host.store, 1, 5))
    with pytest.raises(KeyError):
        result["missing"]


@pytest.mark.slow
def test_an_actor_killed_mid_block_step_is_restarted_and_every_row_is_written_once(tmp_path, ray_session):
    from tests.engine.test_faults import OUT as TAGGED
    from tests.engine.test_faults import DiesOnceStage

    host = Host(str(tmp_path / "run"))
    sources = _sources(host.store, 3, 40)
    marker = tmp_path / "die"
    marker.touch()
    chain = [
        Link(DiesOnceStage, StageConfig(batch_size=10, num_cpus=0.5, concurrency=1), {"marker": str(marker)})
    ]

    def stream(step_url):
        return RayRunner().stream_chain(chain, sources, step_url, {"tagged": None}, TAGGED), {}

    result = run_block_step(host, StepRef(1, "tagged"), ["inputs-v1"], stream, sort_by={"tagged": "i"})
    dead = int(marker.with_suffix(".done").read_text())  # the actor did die, once
    table = result["tagged"]
    assert table["i"].to_pylist() == list(range(120))  # sorted on read: every row exactly once
    assert dead not in set(table["pid"].to_pylist())  # its block was redone by the restarted actor
    assert result.manifest["rows"] == {"tagged": 120}


def test_a_block_step_on_a_run_dir_turned_read_only_fails_clearly_and_resumes(tmp_path):
    point = tmp_path / "disk"
    point.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "tmpfs", str(point)], capture_output=True, check=False
    ).returncode:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        sources = _sources(RunStore(str(tmp_path / "inputs")), 2, 20)
        host = Host(str(point / "run"))
        host.store.write_json("run.json", {})
        subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
        with pytest.raises(RunStoreWriteError, match="round-0001/squares: .*continue with --resume"):
            _step(host, LocalRunner(), sources)
        subprocess.run(["mount", "-o", "remount,rw", str(point)], check=True)
        _check_every_row_once(_step(host, LocalRunner(), sources), 40)
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


GROUP = pa.schema([("key", pa.int64()), ("members", pa.list_(pa.int64()))])


def _group_row(rows: pa.Table) -> pa.Table:
    return pa.table({"key": [rows["i"][0].as_py() % 37], "members": [sorted(rows["i"].to_pylist())]}, GROUP)


def _write_groups(step_url: str, groups: pa.Table) -> list[dict]:
    return [write_block(step_url, "groups", groups)]


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_stream_groups_hands_every_group_whole_to_one_write_in_bundles(tmp_path, kind, request):
    """Groups spread over every source file (i % 37) arrive whole, once each, about rows_per_write at a time."""
    if kind == "ray":
        request.getfixturevalue("ray_session")
    runner = LocalRunner() if kind == "local" else RayRunner()
    store = RunStore(str(tmp_path / "run"))
    sources = []
    for k in range(3):
        i = list(range(k * 100, (k + 1) * 100))
        store.write_parquet(f"keyed/{k}.parquet", pa.table({"i": i, "key_mod": [v % 37 for v in i]}))
        sources.append(store.url_for("keyed", f"{k}.parquet"))
    step_url = store.url_for("step")
    records = runner.stream_groups(
        sources, "key_mod", _group_row, functools.partial(_write_groups, step_url), 10
    )
    groups = pa.concat_tables(pq.read_table(posixpath.join(step_url, r["file"])) for r in records)
    assert sorted(groups["key"].to_pylist()) == list(range(37))
    for key, members in zip(groups["key"].to_pylist(), groups["members"].to_pylist(), strict=True):
        assert members == [i for i in range(300) if i % 37 == key]
    assert sum(r["rows"] for r in records) == 37 and len(records) <= 5  # bundles, not one write per group
