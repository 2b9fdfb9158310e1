"""Simulated human reviewers: answer review tasks from the rendered domain's exact ground truth.

They exist so the whole loop (including its human cost) can run and be measured offline. A reviewer
answers like a careful human who can see the truth, then errs with probability `error_rate`, and
bills the paper's seconds from the cost model. Every random draw comes from
`stable_seed(seed, task_id)`: which reviewer gets a task, and in which order, never changes the
answer, so a resumed run or a run with more reviewers commits the same dataset.

With consensus (k > 1) several simulated reviewers answer replicas of one item; each replica has its
own task id and so its own error draw, which makes the k answers independent, as k people would be. A
reviewer made with `admin=True` also settles disputes (`adjudicate` tasks) by answering the disputed
question itself, with the same error rate.

A plain class on purpose: the engine wraps it as a Ray actor, tests and one-box runs call it directly.
"""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING, Any

from conceptengine.engine import ids
from conceptengine.review.consensus import ADJUDICATE
from conceptengine.review.cost import CostModel
from conceptengine.review.matching import match
from conceptengine.review.queue import ReviewQueue, Task
from conceptengine.sim.oracle import Oracle

if TYPE_CHECKING:  # the type only: a reviewer actor never needs Ray Data loaded
    from conceptengine.engine.runner import Runner

# The quality bar of a careful reviewer: a mask is good (MV), a set exhaustive (EV) and an instance found
# (correction) at IoU >= 0.75 with the truth. SA-Co's mask verification accepts only accurate masks; at 0.5
# a third of the accepted masks a demo round committed were below 0.75 (mean 0.77), and fine-tuning on
# them taught the model its own sloppy outlines. Rejected ones are redrawn exactly in correction.
IOU_MATCH = 0.75


class SimulatedReviewer:
    def __init__(
        self,
        queue_url: str,
        world_dir: str,
        reviewer_id: str,
        error_rate: float,
        seed: int,
        cost: CostModel | dict[str, Any],
        *,
        lease_ttl_s: float = 120.0,
        batch_size: int = 8,
        admin: bool = False,
    ) -> None:
        if (
            isinstance(error_rate, bool)
            or not isinstance(error_rate, (int, float))
            or not 0 <= error_rate <= 1
        ):
            raise ValueError(f"error_rate: must be a number in [0, 1], got {error_rate!r}")
        if not isinstance(reviewer_id, str) or not reviewer_id.strip():
            raise ValueError(f"reviewer_id: must be a non-empty string, got {reviewer_id!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: must be a positive integer, got {batch_size!r}")
        if isinstance(cost, dict):  # e.g. straight from a YAML section
            cost = CostModel(**cost)
        if not isinstance(cost, CostModel):
            raise TypeError(f"cost: must be a CostModel, got {type(cost).__name__}")
        self.reviewer_id = reviewer_id
        # The annotator recorded with every answer, in the verdict table's `sim:ID` convention.
        self.worker_id = reviewer_id if reviewer_id.startswith("sim:") else f"sim:{reviewer_id}"
        self.error_rate = float(error_rate)
        self.seed = int(seed)
        self.cost = cost
        self.lease_ttl_s = lease_ttl_s
        self.batch_size = batch_size
        self.admin = bool(admin)
        self._queue = ReviewQueue(queue_url)
        self._oracle = Oracle(world_dir)

    def work(self, kinds: list[str], round: int, max_tasks: int | None = None) -> int:
        """Lease, answer and submit tasks of `round` until none is left; returns how many it answered.

        Answers that lose a race (another reviewer answered the same task first) are not counted.
        A reviewer that is not an admin skips `adjudicate` in `kinds` (that work is not theirs).
        """
        kinds = [k for k in kinds if self.admin or k != ADJUDICATE]
        answered = 0
        while kinds and (max_tasks is None or answered < max_tasks):
            n = self.batch_size if max_tasks is None else min(self.batch_size, max_tasks - answered)
            tasks = self._queue.lease(
                self.worker_id, kinds, n, self.lease_ttl_s, round=round, admin=self.admin
            )
            if not tasks:
                break
            for task in tasks:
                choice, payload = self.answer(task)
                question = _question(task)
                seconds = self.cost.seconds(question.kind, question.payload, payload)
                result = self._queue.submit(
                    task.task_id, self.worker_id, choice, payload, seconds, admin=self.admin
                )
                answered += result.accepted
        return answered

    def answer(self, task: Task) -> tuple[str, dict[str, Any] | None]:
        """The (choice, answer payload) this reviewer gives, deterministic in (seed, task_id)."""
        rng = random.Random(ids.stable_seed(self.seed, task.task_id))
        task = _question(task)
        p = task.payload
        height, width = int(p["height"]), int(p["width"])
        size = tuple(self._oracle.media_size(p["media_id"]))
        if size != (height, width):
            raise ValueError(
                f"task {task.task_id}: payload size {(height, width)} differs from media {p['media_id']} size {size}"
            )
        truth = self._oracle.instances(p["media_id"], p["noun_phrase"])
        wrong = rng.random() < self.error_rate
        if task.kind == "mv":
            good = bool(match([p["rle"]], truth, height, width, IOU_MATCH))
            return _flip(good, wrong), None
        given = list(p["rles"])
        pairs = match(given, truth, height, width, IOU_MATCH)
        if task.kind == "ev":
            exhaustive = len(pairs) == len(truth) == len(given)
            return _flip(exhaustive, wrong), None
        if task.kind == "correction":
            return "Done", self._correction(task, given, truth, pairs, rng if wrong else None)
        raise ValueError(f"task {task.task_id}: unknown kind {task.kind!r}")

    @staticmethod
    def _correction(
        task: Task,
        given: list[str],
        truth: list[str],
        pairs: list[tuple[int, int]],
        rng: random.Random | None,
    ) -> dict[str, Any]:
        """Add every missed instance, remove every mask that matches none; an erring reviewer misses one edit."""
        hit_given = {g for g, _ in pairs}
        hit_truth = {t for _, t in pairs}
        add = [counts for t, counts in enumerate(truth) if t not in hit_truth]
        ids_ = task.payload.get("instance_ids") or []
        remove: list[int | str] = [
            ids_[g] if len(ids_) == len(given) else g for g in range(len(given)) if g not in hit_given
        ]
        edits = [("add", i) for i in range(len(add))] + [("remove", i) for i in range(len(remove))]
        if rng is not None and edits:
            side, idx = edits[rng.randrange(len(edits))]
            if side == "add":
                add.pop(idx)
            else:
                remove.pop(idx)
        return {"add": add, "remove": remove}


def _question(task: Task) -> Task:
    """The question a task asks: an adjudication asks the disputed MV / EV question again."""
    if task.kind != ADJUDICATE:
        return task
    return dataclasses.replace(task, kind=task.payload["of_kind"], payload=task.payload["task"])


def _flip(correct_accept: bool, wrong: bool) -> str:
    return "Accept" if correct_accept != wrong else "Reject"


class SimulatedReviewers:
    """The demo's `Reviewers`: `n` simulated reviewers answer side by side (the runner's workers: Ray actors on
    a Ray run), and one of them rules on disputes as the admin."""

    def __init__(
        self, world_dir: str, n: int, error_rate: float, seed: int, cost: CostModel, lease_ttl_s: float
    ) -> None:
        self.world_dir, self.n, self.error_rate, self.seed = world_dir, n, error_rate, seed
        self.cost, self.lease_ttl_s = cost, lease_ttl_s

    def _kwargs(self, queue_url: str, reviewer_id: str) -> dict[str, Any]:
        return {
            "queue_url": queue_url,
            "world_dir": self.world_dir,
            "reviewer_id": reviewer_id,
            "error_rate": self.error_rate,
            "seed": self.seed,
            "cost": self.cost,
            "lease_ttl_s": self.lease_ttl_s,
        }

    def answer(self, runner: Runner, queue_url: str, kinds: list[str], round_index: int) -> None:
        kwargs = [self._kwargs(queue_url, f"sim-{k}") for k in range(self.n)]
        runner.run_workers(SimulatedReviewer, kwargs, "work", kinds, round_index)

    def adjudicate(self, queue_url: str, round_index: int) -> None:
        admin = SimulatedReviewer(**self._kwargs(queue_url, "sim-admin"), admin=True)
        admin.work([ADJUDICATE], round_index)
