"""Consensus: k distinct reviewers per item, disputes go to an admin, agreement statistics.

Queue tests run on SQLite and on PostgreSQL (the `review_url` fixture).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
from pathlib import Path

import pytest

from conceptengine.review.consensus import agreement, final_answer
from conceptengine.review.queue import ReviewQueue, SubmissionError
from conceptengine.review.types import AnswerRow, Item
from tests.review import _workers
from tests.review.helpers import ev_spec, mv_spec


def _answer_all(q: ReviewQueue, worker: str, choice: str, kind: str = "ev") -> list[str]:
    done = []
    while batch := q.lease(worker, [kind], 10, ttl_s=600.0):
        for t in batch:
            assert q.submit(t.task_id, worker, choice).accepted
            done.append(t.task_id)
    return done


def test_k_replicas_go_to_k_different_reviewers(review_url: str) -> None:
    q = ReviewQueue(review_url)
    assert q.enqueue([ev_spec(i) for i in range(4)], replicas=3) == 12
    assert q.enqueue([ev_spec(i) for i in range(4)], replicas=3) == 0  # idempotent per item
    first = q.lease("alice", ["ev"], 100, ttl_s=600.0)
    assert len(first) == 4 and len({t.item_id for t in first}) == 4  # one replica per item, not three
    assert q.lease("alice", ["ev"], 100, ttl_s=600.0) == []  # the rest belongs to other reviewers
    for t in first:
        assert q.submit(t.task_id, "alice", "Accept").accepted
    assert q.lease("alice", ["ev"], 100, ttl_s=600.0) == []  # answering does not free another replica
    assert len(_answer_all(q, "bob", "Accept")) == 4
    assert len(_answer_all(q, "carol", "Accept")) == 4
    assert q.open_count(1) == 0
    items = q.items(1, "ev")
    assert len(items) == 4
    for item in items:
        assert item.replicas == 3 and {a.annotator for a in item.answers} == {"alice", "bob", "carol"}
        assert final_answer(item).choice == "Accept"  # type: ignore[union-attr]
    assert q.counts(1)["adjudicate"]["open"] == 0  # unanimous items need no admin


def test_a_reviewer_cannot_answer_two_replicas(review_url: str) -> None:
    q = ReviewQueue(review_url)
    q.enqueue([mv_spec(0)], replicas=2)
    (mine,) = q.lease("alice", ["mv"], 5, ttl_s=600.0)
    (other,) = q.lease("bob", ["mv"], 5, ttl_s=600.0)
    assert q.submit(mine.task_id, "alice", "Accept").accepted
    with pytest.raises(SubmissionError, match="^worker_id: 'alice' already answers another replica"):
        q.submit(other.task_id, "alice", "Accept")  # a walk-in answer to bob's replica
    assert q.submit(mine.task_id, "alice", "Accept").status == "duplicate"  # a retry stays harmless
    assert q.submit(other.task_id, "bob", "Accept").accepted


def test_a_dispute_goes_to_an_admin_whose_answer_is_final(review_url: str) -> None:
    q = ReviewQueue(review_url)
    q.enqueue([mv_spec(0), mv_spec(1)], replicas=2)
    _answer_all(q, "alice", "Accept", "mv")
    for t in q.lease("bob", ["mv"], 5, ttl_s=600.0):
        q.submit(t.task_id, "bob", "Reject" if t.subject_id == mv_spec(0).subject_id else "Accept")
    assert q.open_count(1, ["mv"]) == 0 and q.open_count(1, ["adjudicate"]) == 1
    disputed = next(i for i in q.items(1, "mv") if i.subject_id == mv_spec(0).subject_id)
    assert final_answer(disputed) is None  # no final answer until the admin rules
    with pytest.raises(SubmissionError, match="^kinds: 'adjudicate' tasks are for admins only"):
        q.lease("bob", ["adjudicate"], 5, ttl_s=60.0)
    (adj,) = q.lease("root", ["adjudicate"], 5, ttl_s=60.0, admin=True)
    assert adj.subject_id == mv_spec(0).subject_id and adj.payload["of_kind"] == "mv"
    assert sorted(a["choice"] for a in adj.payload["answers"]) == ["Accept", "Reject"]
    assert adj.payload["task"]["rle"] == mv_spec(0).payload["rle"]  # the admin sees the question itself
    with pytest.raises(SubmissionError, match="^worker_id: 'bob' may not answer adjudicate"):
        q.submit(adj.task_id, "bob", "Accept")
    with pytest.raises(SubmissionError, match="^choice: 'Done' is not a valid mv answer"):
        q.submit(adj.task_id, "root", "Done", admin=True)
    assert q.submit(adj.task_id, "root", "Reject", seconds=12.0, admin=True).accepted
    assert q.submit(adj.task_id, "root", "Reject", seconds=12.0, admin=True).status == "duplicate"
    finals = {i.subject_id: final_answer(i) for i in q.items(1, "mv")}
    _same_by_pair(q, 1, "mv")
    assert finals[mv_spec(0).subject_id].annotator == "root"  # type: ignore[union-attr]
    assert finals[mv_spec(0).subject_id].choice == "Reject"  # type: ignore[union-attr]
    assert finals[mv_spec(1).subject_id].choice == "Accept"  # type: ignore[union-attr]
    assert q.open_count(1) == 0


def test_racing_reviewers_threads(review_url: str) -> None:
    """Six reviewers at once, k = 3: every item gets 3 answers from 3 people; each dispute one admin task."""
    q = ReviewQueue(review_url)
    q.enqueue([ev_spec(i) for i in range(30)], replicas=3)
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            start.wait()
            while batch := q.lease(f"w{k}", ["ev"], 2, ttl_s=600.0):
                for t in batch:
                    # Whoever answers replica 0 of an even item rejects it: exactly those are disputed.
                    choice = "Reject" if t.replica == 0 and int(t.subject_id[4:]) % 2 == 0 else "Accept"
                    assert q.submit(t.task_id, f"w{k}", choice).accepted
        except Exception as exc:  # noqa: BLE001 - surfaced below; a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    items = q.items(1, "ev")
    assert len(items) == 30 and q.open_count(1, ["ev"]) == 0
    for item in items:
        assert len(item.answers) == 3 and len({a.annotator for a in item.answers}) == 3
    disputed = [i for i in items if len({a.choice for a in i.answers}) > 1]
    assert sorted(i.subject_id for i in disputed) == sorted(f"pair{i}" for i in range(0, 30, 2))
    adjudications = q.tasks(1, ["adjudicate"], statuses=("open",))
    assert sorted(t.subject_id for t in adjudications) == sorted(i.subject_id for i in disputed)


def test_racing_reviewers_processes(review_url: str, tmp_path: Path) -> None:
    """Two processes, k = 2: each answers exactly one replica of every item."""
    q = ReviewQueue(review_url)
    q.enqueue([ev_spec(i) for i in range(40)], replicas=2)
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    outs = [tmp_path / f"p{i}.json" for i in range(2)]
    procs = [
        ctx.Process(target=_workers.lease_all, args=(review_url, f"proc{i}", str(o), start))
        for i, o in enumerate(outs)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    a, b = (json.loads(o.read_text()) for o in outs)
    assert len(a) == len(b) == 40 and not set(a) & set(b)
    for item in q.items(1, "ev"):
        assert sorted(x.annotator for x in item.answers) == ["proc0", "proc1"]


def test_consensus_applies_to_mv_and_ev_only(review_url: str) -> None:
    q = ReviewQueue(review_url)
    with pytest.raises(ValueError, match=r"^replicas: consensus \(k=2\) applies to \['mv', 'ev'\]"):
        q.enqueue([ev_spec(0, kind="correction")], replicas=2)
    with pytest.raises(ValueError, match="^replicas: must be a positive integer"):
        q.enqueue([ev_spec(0)], replicas=0)


def test_a_part_answered_item_rolls_over_with_its_answers(review_url: str) -> None:
    q = ReviewQueue(review_url)
    q.enqueue([ev_spec(0)], replicas=2)
    (t,) = q.lease("alice", ["ev"], 5, ttl_s=600.0)
    q.submit(t.task_id, "alice", "Accept")
    assert q.roll_over(1, 2) == 1
    assert q.lease("alice", ["ev"], 5, ttl_s=600.0) == []  # alice's claim follows the item
    (t2,) = q.lease("bob", ["ev"], 5, ttl_s=600.0)
    assert t2.round == 2 and t2.item_id == t.item_id
    q.submit(t2.task_id, "bob", "Accept")
    (item,) = q.items(2, "ev")
    _same_by_pair(q, 2, "ev")
    _same_by_pair(q, 1, "ev")  # round 1 still holds alice's answered replica
    assert sorted(a.annotator for a in item.answers) == ["alice", "bob"]
    assert final_answer(item).choice == "Accept"  # type: ignore[union-attr]


def _same_by_pair(q: ReviewQueue, r: int, kind: str) -> None:
    """A worker's read of its pairs' items (answers, ruling) is the round's read, restricted to those pairs."""
    every = q.items(r, kind)
    for pair in {i.pair_id for i in every}:
        assert q.items(r, kind, pair_ids=[pair]) == [i for i in every if i.pair_id == pair]


def _item(choices: list[str], ruling: str | None = None) -> Item:
    def row(i: int, c: str) -> AnswerRow:
        return AnswerRow("t", "s", "p", f"r{i}", c, None, 1.0)

    return Item(
        "i", "ev", "s", "p", len(choices), tuple(row(i, c) for i, c in enumerate(choices)),
        row(9, ruling) if ruling else None,
    )  # fmt: skip


def test_agreement_statistics_match_fleiss_by_hand() -> None:
    items = [
        _item(["Accept", "Accept", "Accept"]),
        _item(["Accept", "Accept", "Reject"], ruling="Accept"),
        _item(["Reject", "Reject", "Reject"]),
        _item(["Accept", "Reject", "Flag label"]),
        _item(["Accept", "Accept"]),  # incomplete (k=3 would need three answers): left out
    ]
    items[-1] = Item("i", "ev", "s", "p", 3, items[-1].answers)
    stats = agreement(items, "ev")
    # Per-item agreement P_i = (sum n_ij^2 - 3) / 6: 1, 1/3, 1, 0 -> mean 7/12. Category shares over 12
    # ratings: Accept 6, Reject 5, Flag label 1 -> P_e = (36 + 25 + 1) / 144 = 62/144.
    p_bar, p_e = 7 / 12, 62 / 144
    assert stats["items"] == 4 and stats["unanimous"] == 0.5
    assert stats["pairwise_agreement"] == pytest.approx(p_bar)
    assert stats["fleiss_kappa"] == pytest.approx((p_bar - p_e) / (1 - p_e))
    assert (stats["adjudicated"], stats["awaiting_adjudication"]) == (1, 1)
    assert agreement([_item(["Accept", "Accept"])], "ev")["fleiss_kappa"] is None  # chance agreement is 1
    assert agreement([], "mv")["items"] == 0
