"""Who answers the queue: the run's reviewers, if its sources bring any (the demo's simulated ones), then
people: the step waits for them until `review.deadline_s`, then rolls left-overs over to the next round.
"""

from __future__ import annotations

import time

from conceptengine.review.queue import ReviewQueue
from conceptengine.round.context import RunContext


def drain(ctx: RunContext, queue: ReviewQueue, kinds: list[str], r: int) -> None:
    """Returns when no task of these kinds is open in round r (or the deadline passed)."""
    if queue.open_count(r, kinds) == 0:
        return
    if ctx.sources.reviewers is not None:
        ctx.sources.reviewers.answer(ctx.runner, ctx.review_url, kinds, r)
    _wait_for_humans(ctx, queue, kinds, r)


def _wait_for_humans(ctx: RunContext, queue: ReviewQueue, kinds: list[str], r: int) -> None:
    deadline = ctx.cfg.review.deadline_s
    started = time.monotonic()
    while queue.open_count(r, kinds) > 0:
        if deadline is not None and time.monotonic() - started > deadline:
            queue.roll_over(r, r + 1)
            return
        time.sleep(ctx.cfg.review.poll_s)
