"""A queue written before consensus existed opens in place: its answers stay, its tasks stay workable."""

from __future__ import annotations

import time

from sqlalchemy import JSON, Column, Float, ForeignKey, Integer, MetaData, String, Table, create_engine

from conceptengine.review.consensus import final_answer
from conceptengine.review.queue import ReviewQueue
from tests.review.helpers import ev_spec

# The schema of the first release (tasks without item_id / replica / replicas; no claims table).
OLD = MetaData()
Table(
    "tasks",
    OLD,
    Column("task_id", String(64), primary_key=True),
    Column("round", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("subject_id", String(128), nullable=False),
    Column("pair_id", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("lease_owner", String(128)),
    Column("lease_expires_at", Float),
    Column("attempts", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("rolled_to", String(64)),
)
Table(
    "answers",
    OLD,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", ForeignKey("tasks.task_id"), unique=True, nullable=False),
    Column("annotator", String(128), nullable=False),
    Column("choice", String(64), nullable=False),
    Column("payload", JSON),
    Column("seconds", Float, nullable=False),
    Column("answered_at", Float, nullable=False),
)


def test_old_queue_is_upgraded_in_place(review_url: str) -> None:
    engine = create_engine(review_url)
    OLD.create_all(engine)
    specs = [ev_spec(i) for i in range(3)]
    now = time.time()
    with engine.begin() as conn:
        conn.execute(
            OLD.tables["tasks"].insert(),
            [
                {
                    "task_id": s.task_id, "round": 1, "kind": "ev", "subject_id": s.subject_id,
                    "pair_id": s.pair_id, "payload": s.payload, "status": "done" if i == 0 else "open",
                    "attempts": 1, "created_at": now,
                }
                for i, s in enumerate(specs)
            ],
        )  # fmt: skip
        conn.execute(
            OLD.tables["answers"].insert(),
            {"task_id": specs[0].task_id, "annotator": "human:ann", "choice": "Accept", "seconds": 30.0,
             "answered_at": now},
        )  # fmt: skip
    engine.dispose()

    q = ReviewQueue(review_url)
    assert q.enqueue(specs) == 0  # the old tasks are recognised as the same items
    (old,) = q.answers(1, "ev")
    assert (old.annotator, old.choice, old.item_id) == ("human:ann", "Accept", specs[0].task_id)
    for t in q.lease("w", ["ev"], 5, ttl_s=60.0):
        assert q.submit(t.task_id, "w", "Reject").accepted
    finals = {i.subject_id: final_answer(i) for i in q.items(1, "ev")}
    assert {s: a.choice for s, a in finals.items() if a} == {
        "pair0": "Accept",
        "pair1": "Reject",
        "pair2": "Reject",
    }
    q.close()
    assert ReviewQueue(review_url).counts(1)["ev"]["done"] == 3  # a second open changes nothing
