"""The HUMAN_REVIEW step with review.consensus_k = 3 on a rendered world, answered by simulated reviewers.

Checks that k distinct simulated reviewers answer every MV / EV item, that disputes are settled by the
simulated admin, and that the step commits exactly the unanimous or adjudicated answers, whether the tasks
are enqueued and decided in-process or by Ray workers (each from its own block of routed pairs).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conceptengine.config import load_config
from conceptengine.engine import ids, rle
from conceptengine.engine.runner import make_runner
from conceptengine.engine.steps import StepResult
from conceptengine.engine.store import RunStore, StepRef
from conceptengine.review.consensus import final_answer
from conceptengine.review.queue import ReviewQueue
from conceptengine.round.context import RunContext
from conceptengine.round.human_review import human_review
from conceptengine.sim.world import World, build_world

SIZE = 96
K = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"), n_train=3, n_gold=0, seed=5, image_size=SIZE)


def _routed(world: World) -> pa.Table:
    """Per image its most crowded leaf with the true masks plus a bogus one, every decision to humans."""
    rows = []
    for m in world.media_ids():
        instances = world.record(m)["instances"]
        leaf = Counter(i["leaf"] for i in instances).most_common(1)[0][0]
        bogus = np.zeros((SIZE, SIZE), dtype=bool)
        bogus[:6, :6] = True
        rles = [i["rle"] for i in instances if i["leaf"] == leaf] + [rle.encode(bogus)]
        pair = ids.pair_id(m, leaf)
        masks = [
            {
                "instance_id": ids.instance_id(pair, k),
                "rle": c,
                "box_xyxy": rle.box_xyxy(c, SIZE, SIZE),
                "score": 0.5,
            }
            for k, c in enumerate(rles)
        ]
        rows.append({
            "pair_id": pair, "media_id": m, "uri": str(world.image_path(m)), "height": SIZE, "width": SIZE,
            "noun_phrase": leaf, "masks": masks, "mask_routes": ["human"] * len(masks), "ev_route": "human",
        })  # fmt: skip
    return pa.Table.from_pylist(rows)


@pytest.mark.parametrize("runner", ["local", "ray"])
def test_round_uses_the_unanimous_or_adjudicated_answer(
    tmp_path: Path, world: World, runner: str, request: pytest.FixtureRequest
) -> None:
    if runner == "ray":
        request.getfixturevalue("ray_session")
    cfg = load_config(
        None,
        [
            f"runner={runner}",
            f"media.world_dir={world.root}",
            f"review.consensus_k={K}",
            f"review.simulated_reviewers={K}",
            "review.error_rate=0.25",  # enough disagreement to need the admin
        ],
    )
    ctx = RunContext(cfg, RunStore(str(tmp_path / "run")), make_runner(runner), tmp_path)
    routed = _routed(world)
    ref = StepRef(1, "route")
    manifest = ctx.store.write_step(ref, {"routed": routed}, ctx.config_hash, "x")
    routed_step = StepResult(ref, {"routed": routed}, manifest, False, store=ctx.store)

    result = human_review(ctx, 1, routed_step)

    q = ReviewQueue(ctx.review_url)
    assert q.open_count(1) == 0
    finals: dict[str, str] = {}
    for kind in ("mv", "ev"):
        for item in q.items(1, kind):
            assert len({a.annotator for a in item.answers}) == K  # three different simulated reviewers
            answer = final_answer(item)
            assert answer is not None, f"{kind} item {item.subject_id} has no final answer"
            finals[item.subject_id] = answer.choice
    rulings = q.answers(1, "adjudicate")
    assert rulings and {a.annotator for a in rulings} == {"sim:sim-admin"}

    # MV: the EV question of each pair showed exactly the masks whose final MV answer is Accept.
    ev_shown = {
        t.pair_id: t.payload["rles"] for t in q.tasks(1, ["ev"], statuses=("done",)) if t.replica == 0
    }
    for row in routed.to_pylist():
        kept = [m["rle"] for m in row["masks"] if finals[m["instance_id"]] == "Accept"]
        assert ev_shown[row["pair_id"]] == kept
    # EV: a pair is committed as accepted exactly when its final EV answer is Accept.
    decided = {d["pair_id"]: d["ev_outcome"] for d in result["decisions"].to_pylist()}
    assert {p for p, o in decided.items() if o == "accept"} == {p for p in ev_shown if finals[p] == "Accept"}

    # Verdicts: every reviewer's answer, then the admin's ruling on the question it settled.
    verdicts = result["verdicts"].to_pylist()
    by_subject: dict[tuple[str, str], list[str]] = defaultdict(list)
    for v in verdicts:
        by_subject[(v["task"], v["subject_id"])].append(v["annotator"])
    for (task, subject), annotators in by_subject.items():
        if task in ("mv", "ev"):
            assert len(annotators) in (K, K + 1)
            if len(annotators) == K + 1:
                assert annotators[-1] == "sim:sim-admin"
    stats = result.manifest["extra"]["consensus"]
    assert stats["k"] == K and stats["mv"]["items"] == sum(len(r["masks"]) for r in routed.to_pylist())
    assert stats["mv"]["adjudicated"] + stats["ev"]["adjudicated"] == len(rulings)
    assert 0.0 < stats["mv"]["unanimous"] < 1.0
    # The workers asked each question once (the k replicas are the queue's), and their blocks are the step's.
    asked = result.manifest["extra"]["asked"]
    assert asked["mv"] == sum(len(r["masks"]) for r in routed.to_pylist()) and asked["ev"] == routed.num_rows
    assert asked["correction"] == len(q.items(1, "correction"))
