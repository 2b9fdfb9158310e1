"""A run's stages on a real multi-node Ray cluster on this machine; prints one JSON object of what ran where.

Run as a script (tests/engine/test_cluster.py does, in a fresh process: the test session's own Ray would
otherwise be the one every `ray.init` finds). Three nodes: the head, a CPU node and a node that declares
one GPU, so a stage with `num_gpus` must be placed there. The engine joins the cluster twice, once by
address (config `ray_address`) and once through RAY_ADDRESS, as `conceptengine run` would.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import ray
from ray.cluster_utils import Cluster

from conceptengine.engine.runner import Link, RayRunner, ResourceConfigError
from conceptengine.engine.stage import Stage, StageConfig

TAGGED = pa.schema(
    [("i", pa.int64()), ("cpu_node", pa.string()), ("gpu_node", pa.string()), ("gpu_ids", pa.string())]
)


def _here() -> str:
    return ray.get_runtime_context().get_node_id()


# Defined in __main__, so Ray ships both classes to the workers by value.
class OnCpu(Stage):
    name = "cluster_scenario_cpu"
    input_columns = ("i",)
    output_columns = ("i", "cpu_node")

    def __call__(self, batch: pa.Table) -> pa.Table:
        return batch.append_column("cpu_node", pa.array([_here()] * batch.num_rows, pa.string()))


class OnGpu(Stage):
    name = "cluster_scenario_gpu"
    input_columns = ("i", "cpu_node")
    output_columns = ("i", "cpu_node", "gpu_node", "gpu_ids")

    def __call__(self, batch: pa.Table) -> pa.Table:
        gpus = ",".join(str(g) for g in ray.get_gpu_ids())
        return batch.append_column(
            "gpu_node", pa.array([_here()] * batch.num_rows, pa.string())
        ).append_column("gpu_ids", pa.array([gpus] * batch.num_rows, pa.string()))


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.wait_for_nodes()
    report: dict = {"gpu_node": gpu_node.node_id}
    table = pa.table({"i": pa.array(range(200), pa.int64())})
    chain = [
        Link(OnCpu, StageConfig(batch_size=10, num_cpus=1, concurrency=2)),
        Link(OnGpu, StageConfig(batch_size=10, num_cpus=0.5, num_gpus=1, concurrency=1)),
    ]
    try:
        runner = RayRunner(address=cluster.address)
        out = runner.run_chain(chain, table, "i", TAGGED)
        report["rows"] = out["i"].to_pylist()
        report["gpu_nodes"] = sorted(set(out["gpu_node"].to_pylist()))
        report["gpu_ids"] = sorted(set(out["gpu_ids"].to_pylist()))
        report["cpu_nodes"] = sorted(set(out["cpu_node"].to_pylist()))
        report["nodes_seen_by_engine"] = sum(n["Alive"] for n in ray.nodes())
        report["cluster_cpus"] = ray.cluster_resources().get("CPU")
        runner.shutdown()  # a joined cluster keeps running: the driver only disconnects

        os.environ["RAY_ADDRESS"] = cluster.address
        try:
            RayRunner(num_cpus=2)
        except ResourceConfigError as exc:
            report["num_cpus_with_address"] = str(exc)
        runner = RayRunner()  # RAY_ADDRESS, Ray's own convention
        report["joined_by_env_nodes"] = sum(n["Alive"] for n in ray.nodes())
        runner.shutdown()
    finally:
        cluster.shutdown()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
