"""Faults a long run meets, injected: a stage's actor dies mid-step and Ray restarts it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from ray import cloudpickle

from conceptengine.engine.runner import RayRunner, run_stage
from conceptengine.engine.stage import Stage, StageConfig

OUT = pa.schema([("i", pa.int64()), ("pid", pa.int64())])


class DiesOnceStage(Stage):
    """Kills its own actor process (as an OOM kill or a lost node would) on the first batch it sees after
    `marker` is armed, then behaves: Ray must restart the actor and retry the batch."""

    name = "test_dies_once"
    input_columns = ("i",)
    output_columns = ("i", "pid")

    def __call__(self, batch: pa.Table) -> pa.Table:
        marker = Path(self.params["marker"])
        if marker.exists():
            marker.write_text(str(os.getpid()))
            marker.rename(marker.with_suffix(".done"))
            os._exit(1)  # no cleanup, no exception: the process is simply gone
        return batch.append_column("pid", pa.array([os.getpid()] * batch.num_rows, pa.int64()))


# Ray's workers cannot import this test module: ship its classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.mark.slow
def test_an_actor_killed_mid_stage_is_restarted_and_the_output_is_complete(tmp_path, ray_session):
    marker = tmp_path / "die"
    marker.touch()
    table = pa.table({"i": pa.array(range(120), pa.int64())})
    cfg = StageConfig(batch_size=10, num_cpus=0.5, concurrency=1)
    out = run_stage(RayRunner(), DiesOnceStage, cfg, {"marker": str(marker)}, table, "i", OUT)
    dead = int(marker.with_suffix(".done").read_text())  # the actor did die, once
    assert out["i"].to_pylist() == list(range(120))  # every row exactly once: no loss, no duplicate
    assert dead not in set(out["pid"].to_pylist())  # its batch was redone by the restarted actor
