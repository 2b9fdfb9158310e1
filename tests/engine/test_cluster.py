"""The engine on a multi-node Ray cluster (ray.cluster_utils.Cluster on this machine), joined by address."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conceptengine.config import load_config
from conceptengine.engine.runner import ResourceConfigError, ray_init_args

SCENARIO = Path(__file__).with_name("cluster_scenario.py")


@pytest.mark.slow
def test_stages_run_on_a_joined_cluster_and_gpu_stages_land_on_gpu_nodes():
    done = subprocess.run(
        [sys.executable, str(SCENARIO)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["rows"] == list(range(200))  # every row once, in order
    assert report["nodes_seen_by_engine"] == 3 and report["cluster_cpus"] == 6.0  # the cluster's, not a guess
    assert report["gpu_nodes"] == [report["gpu_node"]]  # num_gpus placed every GPU actor on the GPU node
    assert report["gpu_ids"] == ["0"]  # and Ray gave it that node's GPU
    assert "ray_num_cpus=2 sizes a private Ray" in report["num_cpus_with_address"]
    assert report["joined_by_env_nodes"] == 3


def test_a_run_joins_by_address_or_sizes_a_private_ray_never_both(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_init_args(4, None)["num_cpus"] == 4 and "address" not in ray_init_args(4, None)
    assert ray_init_args(None, "ray://head:10001")["address"] == "ray://head:10001"
    with pytest.raises(ResourceConfigError, match="ray_num_cpus=4 sizes a private Ray.*unset one of them"):
        ray_init_args(4, "auto")
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")  # Ray's own convention, as `ray start` prints it
    assert ray_init_args(None, None)["address"] == "head:6379"
    # The command line's --ray-address is the config key, as --set would give it.
    assert load_config(None, ["ray_address=ray://head:10001"]).ray_address == "ray://head:10001"
