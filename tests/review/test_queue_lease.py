"""Leases: exclusive under threads and processes, and an expired lease puts the task back.

Every test runs on SQLite and on PostgreSQL (the `review_url` fixture).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from conceptengine.review.answers import LeaseSpanOver
from conceptengine.review.queue import ReviewQueue
from tests.review import _workers
from tests.review.helpers import Clock, ev_spec, mv_spec


def test_threads_never_share_a_task(review_url: str) -> None:
    q = ReviewQueue(review_url)
    q.enqueue([ev_spec(i) for i in range(60)])
    got: dict[str, list[str]] = {}
    start = threading.Barrier(4)

    def worker(name: str) -> None:
        start.wait()
        mine: list[str] = []
        while batch := q.lease(name, ["ev"], 3, ttl_s=600.0):
            for t in batch:
                assert q.submit(t.task_id, name, "Accept").accepted
                mine.append(t.task_id)
        got[name] = mine

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    all_ids = [tid for ids in got.values() for tid in ids]
    assert len(got) == 4
    assert len(all_ids) == len(set(all_ids)) == 60
    assert q.counts(1)["ev"]["done"] == 60 and q.open_count(1) == 0
    annotators = {a.task_id: a.annotator for a in q.answers(1, "ev")}
    assert all(annotators[tid] == name for name, ids in got.items() for tid in ids)


def test_two_processes_never_share_a_task(review_url: str, tmp_path: Path) -> None:
    url = review_url
    q = ReviewQueue(url)
    q.enqueue([ev_spec(i) for i in range(200)])
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    outs = [tmp_path / f"p{i}.json" for i in range(2)]
    procs = [
        ctx.Process(target=_workers.lease_all, args=(url, f"proc{i}", str(o), start))
        for i, o in enumerate(outs)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    a, b = (json.loads(o.read_text()) for o in outs)
    assert a and b, "both processes should have competed for the queue"
    assert not set(a) & set(b)
    assert len(a) + len(b) == len(set(a) | set(b)) == 200
    assert q.counts(1)["ev"]["done"] == 200
    assert {r.task_id: r.annotator for r in q.answers(1, "ev")} == {t: "proc0" for t in a} | {
        t: "proc1" for t in b
    }


def test_expired_lease_returns_the_task(review_url: str) -> None:
    clock = Clock()
    q = ReviewQueue(review_url, clock=clock)
    q.enqueue([ev_spec(0)])
    (first,) = q.lease("w1", ["ev"], 5, ttl_s=10.0)
    assert first.lease_owner == "w1" and first.attempts == 1
    assert q.lease("w2", ["ev"], 5, ttl_s=10.0) == []
    clock.t += 10.5
    (again,) = q.lease("w2", ["ev"], 5, ttl_s=10.0)
    assert again.task_id == first.task_id and again.lease_owner == "w2" and again.attempts == 2
    # The worker whose lease expired answers late: nobody answered yet, so its work is kept.
    assert q.submit(first.task_id, "w1", "Reject", seconds=30.0).status == "accepted"
    assert q.submit(first.task_id, "w2", "Accept").status == "conflict"
    assert q.get(first.task_id).status == "done"  # type: ignore[union-attr]
    clock.t += 100
    assert q.lease("w3", ["ev"], 5, ttl_s=10.0) == []  # a done task never comes back


def test_expiry_in_real_time(review_url: str) -> None:
    q = ReviewQueue(review_url)
    q.enqueue([ev_spec(0)])
    assert len(q.lease("w1", ["ev"], 1, ttl_s=0.05)) == 1
    time.sleep(0.1)
    assert [t.lease_owner for t in q.lease("w2", ["ev"], 1, ttl_s=60.0)] == ["w2"]


def test_renew_keeps_the_holder_and_release_hands_the_task_back(review_url: str) -> None:
    clock = Clock()
    q = ReviewQueue(review_url, clock=clock)
    q.enqueue([ev_spec(0), ev_spec(1)])
    a, b = q.lease("w1", ["ev"], 2, ttl_s=10.0)
    assert q.renew(a.task_id, "w1", 60.0) == clock.t + 60.0
    assert q.renew(a.task_id, "w2", 60.0) is None  # only the holder renews
    clock.t += 30  # past the first lease, inside the renewed one
    assert [t.task_id for t in q.lease("w2", ["ev"], 5, ttl_s=10.0)] == [b.task_id]
    clock.t += 40  # the renewed lease ran out too, and w2 took b: w1 may revive a, not b
    assert q.renew(a.task_id, "w1", 60.0) == clock.t + 60.0
    assert q.renew(b.task_id, "w1", 60.0) is None
    assert q.renew(b.task_id, "w2", 60.0) == clock.t + 60.0  # (b's holder revives it too)
    assert q.release(a.task_id, "w2") is False
    assert q.release(a.task_id, "w1") is True and q.release(a.task_id, "w1") is False
    released = q.get(a.task_id)
    assert released is not None and (released.status, released.lease_owner) == ("open", None)
    (again,) = q.lease("w3", ["ev"], 5, ttl_s=10.0)  # at once, not at lease expiry
    assert again.task_id == a.task_id
    assert q.submit(a.task_id, "w3", "Accept").accepted
    assert q.renew(a.task_id, "w3", 60.0) is None and q.release(a.task_id, "w3") is False  # answered
    with pytest.raises(ValueError, match="ttl_s"):
        q.renew(b.task_id, "w2", 0)
    with pytest.raises(ValueError, match="worker_id"):
        q.release(b.task_id, "")


def test_lease_filters_kind_and_round(review_url: str) -> None:
    q = ReviewQueue(review_url)
    q.enqueue([ev_spec(0, round_index=1), ev_spec(1, round_index=2), mv_spec(0, round_index=1)])
    assert [t.kind for t in q.lease("w", ["mv"], 10, ttl_s=60.0)] == ["mv"]
    assert [t.round for t in q.lease("w", ["ev"], 10, ttl_s=60.0, round=2)] == [2]
    assert q.lease("w", ["ev"], 0, ttl_s=60.0) == []
    assert q.open_count(1, kinds=["ev"]) == 1 and q.open_count(1, kinds=["correction"]) == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kinds": ["verify"]}, "kinds"),
        ({"kinds": "ev"}, "kinds"),
        ({"n": -1}, "n:"),
        ({"ttl_s": 0}, "ttl_s"),
        ({"worker_id": ""}, "worker_id"),
    ],
)
def test_bad_lease_arguments_name_the_field(tmp_path: Path, kwargs: dict, field: str) -> None:
    q = ReviewQueue(str(tmp_path / "review.db"))
    args = {"worker_id": "w", "kinds": ["ev"], "n": 1, "ttl_s": 60.0} | kwargs
    with pytest.raises(ValueError, match=field):
        q.lease(**args)


def test_renewals_never_carry_a_lease_past_the_maximum_span(review_url: str) -> None:
    clock = Clock()
    q = ReviewQueue(review_url, clock=clock)
    q.enqueue([ev_spec(0)])
    (a,) = q.lease("w1", ["ev"], 1, ttl_s=60.0)
    leased_at = clock.t
    clock.t += 50
    assert q.renew(a.task_id, "w1", 60.0, max_span_s=100.0) == leased_at + 100.0  # capped, not now + 60
    clock.t += 50
    with pytest.raises(LeaseSpanOver, match="max_lease_span_s = 100 s"):
        q.renew(a.task_id, "w1", 60.0, max_span_s=100.0)
    # Its lease has run out, so the task goes to the next reviewer, whose span starts at their own lease.
    (again,) = q.lease("w2", ["ev"], 1, ttl_s=60.0)
    assert again.task_id == a.task_id
    assert q.renew(a.task_id, "w2", 60.0, max_span_s=100.0) == clock.t + 60.0


def test_a_queue_from_before_lease_spans_gets_the_column_and_keeps_its_leases(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'review.db'}"
    clock = Clock()
    q = ReviewQueue(url, clock=clock)
    q.enqueue([ev_spec(0)])
    (a,) = q.lease("w1", ["ev"], 1, ttl_s=60.0)
    q.close()
    with sqlite3.connect(tmp_path / "review.db") as db:  # the table as an older release created it
        db.execute("ALTER TABLE tasks DROP COLUMN leased_at")
    clock.t += 30
    q = ReviewQueue(url, clock=clock)
    assert q.get(a.task_id).lease_owner == "w1"
    renewed_at = clock.t  # the span of a lease taken before the column existed starts at its first renewal
    assert q.renew(a.task_id, "w1", 60.0, max_span_s=100.0) == renewed_at + 60.0
    clock.t += 80
    assert q.renew(a.task_id, "w1", 60.0, max_span_s=100.0) == renewed_at + 100.0
