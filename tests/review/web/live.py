"""Helpers for the browser test: a real engine run waiting for humans, and a real uvicorn server over it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from rich.console import Console

from conceptengine.config import load_config
from conceptengine.pipelines.demo import prepare_demo_workspace
from conceptengine.review.web.app import create_app

# One round on a handful of rendered images, answered by people (no simulated reviewers); the deadline
# only bounds how long a failed test leaves the run waiting.
HUMAN_RUN = [
    "media.sim.n_train=8",
    "media.sim.n_gold=2",
    "media.sim.n_corrupt=0",
    "rounds.count=1",
    "rounds.images_per_round=2",
    "gold.nps_per_image=2",
    "ontology.max_nps_per_image=3",
    "runner=local",
    "review.simulated_reviewers=0",
    "review.deadline_s=90",
    "review.poll_s=0.2",
    "sam3.score_threshold=0.2",  # the small checkpoint is weak: a low threshold gives MV tasks to answer
    "sam3.max_masks=2",
    "retrain.enabled=false",
]


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > end:
            raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(0.1)


@contextmanager
def engine_run(root: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    """`conceptengine run` in a subprocess on a fresh rendered workspace; killed if still running at exit."""
    cfg = load_config(None, HUMAN_RUN)
    config = prepare_demo_workspace(root, cfg, Console(quiet=True))
    run_dir = root / "run"
    env = os.environ | {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    log = (root / "run.log").open("w")
    cmd = [sys.executable, "-m", "conceptengine.cli", "run", str(config), "--run-dir", str(run_dir)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: (run_dir / "run.json").exists() or proc.poll() is not None, 60, "run.json")
        yield run_dir, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        log.close()


@contextmanager
def live_server(run_dir: Path) -> Iterator[str]:
    """The review app on a real uvicorn server bound to a free loopback port; yields its base URL."""
    app = create_app(str(run_dir))
    app.state.tracker.warm_up()
    with serve(app) as base:
        yield base


@contextmanager
def serve(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """`app` on a real uvicorn server bound to a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
