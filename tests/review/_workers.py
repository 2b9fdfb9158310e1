"""Entry points for child processes in the review tests (spawned, so they must be importable)."""

from __future__ import annotations

import json
import os


def lease_all(url: str, worker: str, out_path: str, start) -> None:  # type: ignore[no-untyped-def]
    """Lease two at a time and answer them until nothing is left; write what this process got."""
    from conceptengine.review.queue import ReviewQueue

    q = ReviewQueue(url)
    start.wait(30)  # both processes are up and connected: now they race
    got: list[str] = []
    # Both hold a first lease before either goes on: on a loaded machine one process could
    # otherwise drain the queue before the other is scheduled, and nothing would be contended.
    batch = q.lease(worker, ["ev"], 2, ttl_s=600.0)
    start.wait(30)
    while batch:
        for t in batch:
            assert q.submit(t.task_id, worker, "Accept").accepted, t.task_id
            got.append(t.task_id)
        batch = q.lease(worker, ["ev"], 2, ttl_s=600.0)
    with open(out_path, "w") as f:
        json.dump(got, f)


def answer_then_crash(url: str, n_tasks: int) -> None:
    """Enqueue, answer half, then die without closing anything (as a kill -9 would leave it)."""
    from conceptengine.review.queue import ReviewQueue
    from tests.review.helpers import ev_spec

    q = ReviewQueue(url)
    q.enqueue([ev_spec(i) for i in range(n_tasks)])
    for t in q.lease("crasher", ["ev"], n_tasks // 2, ttl_s=600.0):
        q.submit(t.task_id, "crasher", "Accept", seconds=30.0)
    os._exit(0)
