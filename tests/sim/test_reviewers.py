"""Simulated reviewers on a tiny rendered world: exact at error_rate 0, about 20 % wrong at 0.2.

Expected answers are computed from the world's ground-truth table by leaf name (not through the
oracle the reviewer uses), so the test checks the reviewer against the world itself.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conceptengine.engine import ids, rle
from conceptengine.review.cost import CostModel
from conceptengine.review.queue import ReviewQueue, TaskSpec
from conceptengine.sim.reviewers import SimulatedReviewer
from conceptengine.sim.world import World, build_world

SIZE = 96


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"), n_train=4, n_gold=0, seed=7, image_size=SIZE)


def _truth(world: World, media_id: str, leaf: str) -> list[str]:
    return [i["rle"] for i in world.record(media_id)["instances"] if i["leaf"] == leaf]


def _cases(world: World) -> list[tuple[str, str, list[str]]]:
    """(media_id, present leaf NP, its GT masks) for every image, plus the leaves absent from it."""
    out = []
    for m in world.media_ids():
        leaves = Counter(i["leaf"] for i in world.record(m)["instances"] if "_" not in i["leaf"])
        leaf = max(sorted(leaves), key=lambda k: leaves[k])  # the most crowded single-word leaf
        out.append((m, leaf, _truth(world, m, leaf)))
    return out


def _absent_leaf(world: World, media_id: str) -> str:
    present = {i["leaf"] for i in world.record(media_id)["instances"]}
    return next(
        x for x in ("star", "heart", "hexagon", "ring", "kite", "cross", "octagon") if x not in present
    )


def _base(world: World, m: str, np_: str) -> dict:
    return {"media_id": m, "uri": str(world.image_path(m)), "height": SIZE, "width": SIZE, "noun_phrase": np_}


def _mv(world: World, m: str, np_: str, counts: str, tag: str, r: int = 1) -> TaskSpec:
    pair = ids.pair_id(m, np_)
    iid = f"{pair}:{tag}"
    payload = _base(world, m, np_) | {
        "instance_id": iid,
        "rle": counts,
        "box_xyxy": rle.box_xyxy(counts, SIZE, SIZE),
    }
    return TaskSpec(kind="mv", round=r, subject_id=iid, pair_id=pair, payload=payload)


def _pair(world: World, kind: str, m: str, np_: str, rles: list[str], tag: str = "") -> TaskSpec:
    """A pair-level task; `tag` keeps several test variants of one pair apart in the queue."""
    pair = ids.pair_id(m, np_)
    payload = _base(world, m, np_) | {"rles": rles}
    return TaskSpec(kind=kind, round=1, subject_id=pair + tag, pair_id=pair, payload=payload)


def _shifted(counts: str, dx: int) -> str:
    return rle.encode(np.roll(rle.decode(counts, SIZE, SIZE), dx, axis=1))


def _bogus() -> str:
    m = np.zeros((SIZE, SIZE), dtype=bool)
    m[:5, :5] = True
    return rle.encode(m)


def _reviewer(
    tmp_path: Path, world: World, rid: str, error_rate: float = 0.0, seed: int = 3
) -> SimulatedReviewer:
    return SimulatedReviewer(str(tmp_path / "review.db"), str(world.root), rid, error_rate, seed, CostModel())


def test_exact_answers_at_error_rate_zero(tmp_path: Path, world: World) -> None:
    q = ReviewQueue(str(tmp_path / "review.db"))
    specs: list[TaskSpec] = []
    expected: dict[str, tuple[str, dict | None]] = {}

    def add(spec: TaskSpec, choice: str, payload: dict | None = None) -> None:
        specs.append(spec)
        expected[spec.task_id] = (choice, payload)

    for m, leaf, gt in _cases(world):
        absent = _absent_leaf(world, m)
        add(_mv(world, m, leaf, gt[0], "gt"), "Accept")
        add(_mv(world, m, leaf, _bogus(), "bogus"), "Reject")
        add(_mv(world, m, absent, gt[0], "wrong-np"), "Reject")
        add(_pair(world, "ev", m, leaf, list(reversed(gt))), "Accept")
        add(_pair(world, "ev", m, absent, []), "Accept")
        add(_pair(world, "ev", m, leaf, gt + [gt[0]], "dup"), "Reject")  # a duplicate mask is not exhaustive
        add(_pair(world, "ev", m, leaf, [], "none"), "Reject")  # present NP, nothing proposed
        if len(gt) > 1:
            add(_pair(world, "ev", m, leaf, gt[1:], "missed"), "Reject")  # one instance missed
        add(
            _pair(world, "correction", m, leaf, gt[1:] + [_bogus()]),
            "Done",
            {"add": [gt[0]], "remove": [len(gt) - 1]},
        )
        add(
            _pair(world, "correction", m, absent, [_bogus(), _shifted(gt[0], 30)]),
            "Done",
            {"add": [], "remove": [0, 1]},
        )
    assert q.enqueue(specs) == len(specs) == len(expected)

    a, b = _reviewer(tmp_path, world, "a"), _reviewer(tmp_path, world, "b")
    n_a = a.work(["mv", "ev", "correction"], round=1, max_tasks=5)
    n_b = b.work(["mv", "ev", "correction"], round=1)
    assert (n_a, n_a + n_b) == (5, len(expected))
    assert q.open_count(1) == 0

    cost = CostModel()
    seen = 0
    for kind in ("mv", "ev", "correction"):
        for ans in q.answers(1, kind):
            choice, payload = expected[ans.task_id]
            assert (ans.choice, ans.payload) == (choice, payload), (kind, ans.subject_id)
            assert ans.annotator in ("sim:a", "sim:b")
            task = q.get(ans.task_id)
            assert ans.seconds == cost.seconds(kind, task.payload, ans.payload)  # type: ignore[union-attr]
            seen += 1
    assert seen == len(expected)


def test_error_rate_is_roughly_respected_and_order_independent(tmp_path: Path, world: World) -> None:
    q = ReviewQueue(str(tmp_path / "review.db"))
    m, leaf, gt = _cases(world)[0]
    specs = [_mv(world, m, leaf, gt[0], f"good{k}") for k in range(150)]
    specs += [_mv(world, m, leaf, _bogus(), f"bad{k}") for k in range(150)]
    q.enqueue(specs)
    rev = _reviewer(tmp_path, world, "x", error_rate=0.2)
    assert rev.work(["mv"], round=1) == len(specs)
    truth = {s.task_id: ("Accept" if "good" in s.subject_id else "Reject") for s in specs}
    answers = q.answers(1, "mv")
    wrong = sum(a.choice != truth[a.task_id] for a in answers) / len(answers)
    assert 0.13 <= wrong <= 0.27, wrong

    # Another reviewer, answering in reverse order, gives the very same answers: randomness is per task.
    other = _reviewer(tmp_path, world, "y", error_rate=0.2)
    tasks = [q.get(s.task_id) for s in reversed(specs)]
    assert {t.task_id: other.answer(t)[0] for t in tasks} == {a.task_id: a.choice for a in answers}  # type: ignore[union-attr]


def test_erring_correction_misses_exactly_one_edit(tmp_path: Path, world: World) -> None:
    q = ReviewQueue(str(tmp_path / "review.db"))
    m, leaf, gt = max(_cases(world), key=lambda c: len(c[2]))
    q.enqueue([_pair(world, "correction", m, leaf, gt[2:] + [_bogus()])])
    (task,) = q.lease("peek", ["correction"], 1, ttl_s=60.0)
    full = _reviewer(tmp_path, world, "z", error_rate=0.0).answer(task)[1]
    sloppy = _reviewer(tmp_path, world, "z", error_rate=1.0).answer(task)[1]
    assert full is not None and sloppy is not None
    assert len(full["add"]) + len(full["remove"]) == len(gt[:2]) + 1
    assert len(sloppy["add"]) + len(sloppy["remove"]) == len(full["add"]) + len(full["remove"]) - 1
    assert set(sloppy["add"]) <= set(full["add"]) and set(sloppy["remove"]) <= set(full["remove"])


def test_bad_reviewer_settings(tmp_path: Path, world: World) -> None:
    with pytest.raises(ValueError, match="error_rate"):
        _reviewer(tmp_path, world, "r", error_rate=1.5)
    with pytest.raises(ValueError, match="reviewer_id"):
        _reviewer(tmp_path, world, "")
