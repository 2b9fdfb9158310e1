"""Who answers the queue: simulated reviewers (Ray actors, or in-process) or real people (wait for them).

Simulated reviewers answer from the rendered domain's oracle, so they exist only for `media.source:
sim`; on real media the step waits for humans until `review.deadline_s`, then rolls left-overs over.
"""

from __future__ import annotations

import time

from conceptengine.engine.context import RunContext
from conceptengine.review.queue import ReviewQueue


def _reviewer_kwargs(ctx: RunContext, k: int) -> dict:
    return {
        "queue_url": ctx.review_url,
        "world_dir": ctx.world_dir,
        "reviewer_id": f"sim-{k}",
        "error_rate": ctx.cfg.review.error_rate,
        "seed": ctx.cfg.seed,
        "cost": ctx.cfg.review.cost,
        "lease_ttl_s": ctx.cfg.review.lease_ttl_s,
    }


def drain(ctx: RunContext, queue: ReviewQueue, kinds: list[str], r: int) -> None:
    """Returns when no task of these kinds is open in round r (or the deadline passed)."""
    if queue.open_count(r, kinds) == 0:
        return
    n = ctx.cfg.review.simulated_reviewers
    if n > 0 and ctx.has_oracle:
        if ctx.cfg.runner == "ray":
            _drain_with_ray_actors(ctx, kinds, r, n)
        else:
            from conceptengine.review.simulated import SimulatedReviewer

            for k in range(n):
                SimulatedReviewer(**_reviewer_kwargs(ctx, k)).work(kinds, r)
    _wait_for_humans(ctx, queue, kinds, r)


def _drain_with_ray_actors(ctx: RunContext, kinds: list[str], r: int, n: int) -> None:
    import ray

    from conceptengine.review.simulated import SimulatedReviewer

    actor_cls = ray.remote(num_cpus=0.25)(SimulatedReviewer)
    actors = [actor_cls.remote(**_reviewer_kwargs(ctx, k)) for k in range(n)]
    try:
        ray.get([a.work.remote(kinds, r) for a in actors])
    finally:
        for a in actors:
            ray.kill(a)


def _wait_for_humans(ctx: RunContext, queue: ReviewQueue, kinds: list[str], r: int) -> None:
    deadline = ctx.cfg.review.deadline_s
    started = time.monotonic()
    while queue.open_count(r, kinds) > 0:
        if deadline is not None and time.monotonic() - started > deadline:
            queue.roll_over(r, r + 1)
            return
        time.sleep(ctx.cfg.review.poll_s)
