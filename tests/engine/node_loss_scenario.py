"""A worker node removed mid-step on a real multi-node Ray cluster; writes one JSON object of what happened to
the file named by its argument (Ray's own logs share stdout).

Run as a script (tests/engine/test_faults.py does, in a fresh process, as tests/engine/cluster_scenario.py
is). The head keeps one CPU, too few for the stage's 2-CPU actors, so they run on the two 4-CPU worker
nodes. Once a few batches are done, the node that ran the first one is removed (its raylet and every
process on it stopped, its object store gone), and the step must still return every row exactly once.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import pyarrow as pa
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from conceptengine.engine.runner import RayRunner, run_stage
from conceptengine.engine.stage import Stage, StageConfig

ROWS, BATCH = 400, 10
OUT = pa.schema([("i", pa.int64()), ("node", pa.string())])


class SlowOnWorkers(Stage):  # defined in __main__: Ray ships it to the workers by value
    name = "node_loss_scenario"
    input_columns = ("i",)
    output_columns = ("i", "node")

    def __call__(self, batch: pa.Table) -> pa.Table:
        time.sleep(0.1)  # a model's work: the step lasts a few seconds
        node = ray.get_runtime_context().get_node_id()
        ray.get_actor("batches", namespace="node_loss").record.remote(node)
        return batch.append_column("node", pa.array([node] * batch.num_rows, pa.string()))


@ray.remote(num_cpus=0)
class Batches:
    """Where each batch ran, in order, as the stage reports it."""

    def __init__(self) -> None:
        self.nodes: list[str] = []

    def record(self, node: str) -> None:
        self.nodes.append(node)

    def seen(self) -> list[str]:
        return self.nodes


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = {n.node_id: n for n in (cluster.add_node(num_cpus=4), cluster.add_node(num_cpus=4))}
    cluster.wait_for_nodes()
    runner = RayRunner(address=cluster.address)
    # The recorder lives on the head, beside the driver: the node removed must be one the stage ran on,
    # never the one holding the record of where it ran.
    head = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    batches = Batches.options(name="batches", namespace="node_loss", scheduling_strategy=head).remote()
    table = pa.table({"i": pa.array(range(ROWS), pa.int64())})
    cfg = StageConfig(batch_size=BATCH, num_cpus=2, concurrency=2)
    result: dict = {}

    def step() -> None:
        try:
            result["out"] = run_stage(runner, SlowOnWorkers, cfg, {}, table, "i", OUT)
        except Exception as exc:  # noqa: BLE001 - reported, and the test fails on it
            result["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=step)
    thread.start()
    deadline = time.monotonic() + 120
    while len(ray.get(batches.seen.remote())) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = ray.get(batches.seen.remote())
    removed = seen[0]
    cluster.remove_node(workers[removed])
    report = {"batches_before_removal": len(seen), "removed": removed, "workers": sorted(workers)}
    thread.join(timeout=300)
    report["finished"] = not thread.is_alive()
    if "out" in result:
        out = result["out"]
        report["rows"] = out["i"].to_pylist()
        report["nodes_in_output"] = sorted(set(out["node"].to_pylist()))
    report["error"] = result.get("error")
    report["batches_run"] = len(ray.get(batches.seen.remote()))
    with open(sys.argv[1], "w") as f:
        json.dump(report, f)
    runner.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
