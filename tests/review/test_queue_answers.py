"""Answers: idempotent enqueue and submit, conflicts, malformed submissions, roll-over, durability.

Every test runs on SQLite and on PostgreSQL (the `review_url` fixture).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from conceptengine.engine import ids
from conceptengine.review.queue import ReviewQueue, SubmissionError, TaskSpec
from tests.review import _workers
from tests.review.helpers import ev_spec, mv_spec, square


@pytest.fixture
def queue(review_url: str) -> Iterator[ReviewQueue]:
    q = ReviewQueue(review_url)
    yield q
    q.close()


def test_enqueue_is_idempotent(queue: ReviewQueue) -> None:
    specs = [ev_spec(i) for i in range(5)] + [mv_spec(i) for i in range(3)]
    assert queue.enqueue(specs) == 8
    assert queue.enqueue(specs + specs[:2]) == 0  # re-enqueue after a crash adds nothing
    assert queue.enqueue([ev_spec(5), ev_spec(5)]) == 1  # duplicates inside one batch count once
    assert specs[0].task_id == ids.task_id("pair0", "ev", 1)
    counts = queue.counts(1)
    assert counts["ev"]["open"] == 6 and counts["mv"]["open"] == 3 and counts["correction"]["open"] == 0


def test_same_answer_twice_is_a_noop_and_a_different_one_is_rejected(queue: ReviewQueue) -> None:
    queue.enqueue([mv_spec(0)])
    (task,) = queue.lease("alice", ["mv"], 1, ttl_s=60.0)
    assert queue.submit(task.task_id, "alice", "Accept", seconds=8.0).status == "accepted"
    assert queue.submit(task.task_id, "alice", "Accept", seconds=8.0).status == "duplicate"
    res = queue.submit(task.task_id, "bob", "Reject")
    assert res.status == "conflict" and not res.accepted
    assert (res.existing_choice, res.existing_annotator) == ("Accept", "alice")
    (answer,) = queue.answers(1, "mv")
    assert (answer.choice, answer.annotator, answer.seconds, answer.subject_id) == (
        "Accept",
        "alice",
        8.0,
        "pair0:000",
    )


def test_correction_answers_compare_by_content(queue: ReviewQueue) -> None:
    queue.enqueue([ev_spec(0, kind="correction", rles=[square(0, 0), square(8, 8)])])
    (task,) = queue.lease("c", ["correction"], 1, ttl_s=60.0)
    edit = {"add": [square(4, 4)], "remove": [1]}
    assert queue.submit(task.task_id, "c", "Done", edit, seconds=107.0).accepted
    assert (
        queue.submit(task.task_id, "c", "Done", {"remove": [1], "add": [square(4, 4)]}).status == "duplicate"
    )
    assert queue.submit(task.task_id, "c", "Done", {"add": [], "remove": [1]}).status == "conflict"
    (answer,) = queue.answers(1, "correction")
    assert answer.payload == edit and answer.pair_id == "pair0"


def test_answer_without_a_lease_still_counts_once(queue: ReviewQueue) -> None:
    queue.enqueue([ev_spec(0)])
    tid = ev_spec(0).task_id
    assert queue.submit(tid, "walk-in", "Accept").accepted
    assert queue.lease("w", ["ev"], 5, ttl_s=60.0) == []
    assert queue.open_count(1) == 0


@pytest.mark.parametrize(
    ("choice", "payload", "field"),
    [
        ("Yes", None, "choice"),
        ("Done", None, "choice"),  # "Done" is a correction answer, not an EV one
        ("Accept", ["not", "a", "dict"], "payload"),
    ],
)
def test_malformed_ev_submission_names_the_field(
    queue: ReviewQueue, choice: str, payload, field: str
) -> None:
    queue.enqueue([ev_spec(0)])
    with pytest.raises(SubmissionError, match=f"^{field}"):
        queue.submit(ev_spec(0).task_id, "w", choice, payload)
    assert queue.answers(1, "ev") == []


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (None, "payload"),
        ({"add": "abc"}, r"payload\.add"),
        ({"add": [17]}, r"payload\.add\[0\]"),
        ({"add": ["!!garbage!!"]}, r"payload\.add\[0\]"),
        ({"remove": [5]}, r"payload\.remove\[0\]"),
        ({"remove": [0, True]}, r"payload\.remove\[1\]"),
        ({"add": [], "edit": []}, r"payload\.edit"),
    ],
)
def test_malformed_correction_names_the_field(queue: ReviewQueue, payload, field: str) -> None:
    queue.enqueue([ev_spec(0, kind="correction", rles=[square(0, 0)])])
    with pytest.raises(SubmissionError, match=f"^{field}"):
        queue.submit(ev_spec(0, kind="correction").task_id, "w", "Done", payload)


def test_other_bad_submissions(queue: ReviewQueue) -> None:
    queue.enqueue([ev_spec(0)])
    tid = ev_spec(0).task_id
    with pytest.raises(SubmissionError, match="^task_id"):
        queue.submit("nope", "w", "Accept")
    with pytest.raises(SubmissionError, match="^seconds"):
        queue.submit(tid, "w", "Accept", seconds=-1.0)
    with pytest.raises(SubmissionError, match="^worker_id"):
        queue.submit(tid, "  ", "Accept")


def test_bad_task_specs_name_the_field() -> None:
    with pytest.raises(ValidationError, match=r"payload\.rle\b"):
        TaskSpec(
            kind="mv",
            round=1,
            subject_id="p:000",
            pair_id="p",
            payload={
                "media_id": "m",
                "uri": "u",
                "height": 4,
                "width": 4,
                "noun_phrase": "x",
                "instance_id": "p:000",
                "box_xyxy": [0, 0, 1, 1],
            },
        )
    with pytest.raises(ValidationError, match="kind"):
        TaskSpec(kind="verify", round=1, subject_id="p", pair_id="p", payload={})
    with pytest.raises(ValidationError, match=r"payload\.height"):
        TaskSpec(
            kind="ev",
            round=1,
            subject_id="p",
            pair_id="p",
            payload={"media_id": "m", "uri": "u", "height": 0, "width": 4, "noun_phrase": "x", "rles": []},
        )


def test_roll_over_carries_open_tasks_and_forwards_late_answers(queue: ReviewQueue) -> None:
    queue.enqueue([ev_spec(i) for i in range(3)])
    leased = queue.lease("slow", ["ev"], 2, ttl_s=600.0)
    queue.submit(leased[0].task_id, "slow", "Accept")
    assert queue.roll_over(1, 2) == 2
    assert queue.roll_over(1, 2) == 0
    assert queue.counts(1)["ev"] == {"open": 0, "leased": 0, "done": 1, "rolled": 2}
    assert queue.counts(2)["ev"]["open"] == 2 and queue.open_count(1) == 0
    late = queue.submit(leased[1].task_id, "slow", "Reject")  # answered after the deadline
    successor = ids.task_id(leased[1].subject_id, "ev", 2)
    assert late.accepted and late.task_id == successor
    assert [a.task_id for a in queue.answers(2, "ev")] == [successor]
    with pytest.raises(ValueError, match="to_round"):
        queue.roll_over(2, 2)


def test_survives_reopen_and_a_crashed_writer(review_url: str) -> None:
    url = review_url
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_workers.answer_then_crash, args=(url, 10))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    q = ReviewQueue(url)  # a fresh process view of the file the crashed one left behind
    assert q.enqueue([ev_spec(i) for i in range(10)]) == 0
    assert q.counts(1)["ev"] == {"open": 5, "leased": 0, "done": 5, "rolled": 0}
    assert {a.annotator for a in q.answers(1, "ev")} == {"crasher"}
    (t,) = q.lease("w", ["ev"], 1, ttl_s=60.0)
    q.submit(t.task_id, "w", "Reject")
    q.close()
    # A bare file path names the same SQLite queue as its URL.
    reopened = ReviewQueue(url.removeprefix("sqlite:///"))
    assert reopened.counts(1)["ev"]["done"] == 6
    assert reopened.submit(t.task_id, "w", "Reject").status == "duplicate"
