"""COMMIT: provenance of committed pairs, what is left out (flagged, rolled over), AI verdicts, files written."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from PIL import Image

from conceptengine.config import load_config
from conceptengine.engine import rle
from conceptengine.engine.runner import make_runner
from conceptengine.engine.steps import StepResult
from conceptengine.engine.store import RunStore, StepRef
from conceptengine.engine.tables import ANNOTATIONS, VERDICTS
from conceptengine.round.annotations import DECISIONS, ai_verdict_rows, build_annotations, decide
from conceptengine.round.commit import commit_round
from conceptengine.round.context import RunContext
from conceptengine.verifiers.routing import NO_THRESHOLDS, needs_human, route
from conceptengine.verifiers.stage import VERIFIED

H, W = 6, 8
MV_REJECT = [0.1, 0.0, 0.0, 0.0, 0.9]  # argmax: Reject
EV_FLAG = [0.2, 0.1, 0.0, 0.6, 0.1, 0.0]  # argmax: Flag label


def _mask(pair: str, k: int, top: int) -> dict:
    m = np.zeros((H, W), dtype=bool)
    m[top : top + 2, k : k + 3] = True
    counts = rle.encode(m)
    return {
        "instance_id": f"{pair}:{k:03d}",
        "rle": counts,
        "box_xyxy": rle.box_xyxy(counts, H, W),
        "score": 0.5,
    }


# pair -> (media, number of proposed masks)
PAIRS = {"a-auto": ("m1", 1), "b-human": ("m1", 2), "c-corr": ("m2", 1), "d-neg": ("m2", 0),
         "e-flag": ("m1", 1), "f-rolled": ("m2", 1)}  # fmt: skip


def _routed(uris: dict[str, str]) -> pa.Table:
    rows = [
        {"pair_id": p, "media_id": m, "uri": uris[m], "width": W, "height": H, "noun_phrase": f"np {p}",
         "node_id": None, "origin": "caption", "round": 1, "presence": 0.5, "model_version": "s", "error": None,
         "masks": [_mask(p, k, 0) for k in range(n)], "mv_probs": [MV_REJECT] * n, "ev_probs": EV_FLAG,
         "verifier_version": "v7"}
        for p, (m, n) in PAIRS.items()
    ]  # fmt: skip
    return route(pa.Table.from_pylist(rows, VERIFIED), NO_THRESHOLDS)


def _decisions() -> pa.Table:
    """b-human lost a mask in MV; c-corr got one drawn in correction; e-flag flagged; f-rolled is absent."""
    rows = [
        ("a-auto", [_mask("a-auto", 0, 0)], "accept", False),
        ("b-human", [_mask("b-human", 1, 0)], "accept", True),
        ("c-corr", [_mask("c-corr", 0, 0), _mask("c-corr", 1, 3)], "corrected", True),
        ("d-neg", [], "accept", False),
        ("e-flag", [_mask("e-flag", 0, 0)], "flagged", True),
    ]
    names = ("pair_id", "masks", "ev_outcome", "human_touched")
    return pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows], DECISIONS)


def test_provenance_and_only_decided_unflagged_pairs_are_committed():
    ann = build_annotations(_routed({"m1": "/x/m1.png", "m2": "/x/m2.png"}), _decisions(), 3)
    assert ann["pair_id"].to_pylist() == ["a-auto", "b-human", "c-corr", "d-neg"]
    rows = {r["pair_id"]: r for r in ann.to_pylist()}
    assert {p: r["provenance"] for p, r in rows.items()} == {
        "a-auto": "auto", "b-human": "human", "c-corr": "corrected", "d-neg": "auto"
    }  # fmt: skip
    # The decision's masks are committed, not the proposal's.
    assert [m["instance_id"] for m in rows["b-human"]["masks"]] == ["b-human:001"]
    assert [m["instance_id"] for m in rows["c-corr"]["masks"]] == ["c-corr:000", "c-corr:001"]
    assert [r["is_negative"] for r in rows.values()] == [False, False, False, True]
    assert {r["media_id"] for r in rows.values()} == {"m1", "m2"} and set(ann["round"].to_pylist()) == {3}
    assert rows["c-corr"]["noun_phrase"] == "np c-corr" and rows["c-corr"]["uri"] == "/x/m2.png"


def test_ai_verdicts_one_per_mask_and_one_per_pair_with_argmax_choice():
    routed = _routed({"m1": "u", "m2": "u"})
    v = ai_verdict_rows(decide(routed, {}, 2)).to_pylist()
    mv = [x for x in v if x["task"] == "mv"]
    ev = [x for x in v if x["task"] == "ev"]
    assert len(mv) == sum(n for _, n in PAIRS.values()) and len(ev) == len(PAIRS)
    assert {x["subject_id"] for x in mv} == {
        m["instance_id"] for ms in routed["masks"].to_pylist() for m in ms
    }
    assert {x["choice"] for x in mv} == {"Reject"} and {x["choice"] for x in ev} == {"Flag label"}
    assert all(x["subject_id"] == x["pair_id"] for x in ev)
    assert {(x["annotator"], x["round"], x["seconds"]) for x in v} == {("ai:v7", 2, 0.0)}


def _stored(store: RunStore, ref: StepRef, tables: dict[str, pa.Table]) -> StepResult:
    """A finished upstream step, as the commit's workers read it: files in the run store."""
    manifest = store.write_step(ref, tables, "cfg", ref.rel)
    return StepResult(ref, {}, manifest, reused=False, store=store)


def test_commit_round_writes_annotations_verdicts_shards_and_counts(tmp_path):
    uris = {}
    for m in ("m1", "m2"):
        Image.new("RGB", (W, H)).save(tmp_path / f"{m}.png")
        uris[m] = str(tmp_path / f"{m}.png")
    cfg = load_config(None, ["runner=local"])
    ctx = RunContext(cfg, RunStore(str(tmp_path / "run")), make_runner("local"), tmp_path)
    human = [{"subject_id": "b-human:000", "pair_id": "b-human", "task": "mv", "annotator": "sim:a",
              "choice": "Reject", "probs": None, "seconds": 4.0, "round": 1}]  # fmt: skip
    routed = _stored(ctx.store, StepRef(1, "route"), {"routed": _routed(uris)})
    review = {"decisions": _decisions(), "verdicts": pa.Table.from_pylist(human, VERDICTS)}
    out = commit_round(ctx, 1, routed, _stored(ctx.store, StepRef(1, "human_review"), review))

    extra = out.manifest["extra"]
    assert (extra["committed_pairs"], extra["committed_negative"], extra["committed_masks"]) == (4, 1, 4)
    assert out["annotations"]["pair_id"].to_pylist() == ["a-auto", "b-human", "c-corr", "d-neg"]
    commit = StepRef(1, "commit")
    assert ctx.store.read_every_round("commit", "annotations", ANNOTATIONS).equals(out["annotations"])
    verdicts = ctx.store.read_step(commit, "verdicts")
    assert verdicts.num_rows == 6 + 6 + 1  # MV per proposed mask, EV per pair, the human answer
    assert [p.rsplit("/", 1)[0] for p in extra["shards"]] == ["round-0001/commit/shards"]
    with tarfile.open(tmp_path / "run" / extra["shards"][0]) as tar:
        metas = [json.loads(tar.extractfile(n).read()) for n in tar.getnames() if n.endswith(".json")]
        assert sorted(n for n in tar.getnames() if n.endswith(".png")) == ["m1.png", "m2.png"]
    by_media = {m["media_id"]: [p["pair_id"] for p in m["pairs"]] for m in metas}
    assert by_media == {"m1": ["a-auto", "b-human"], "m2": ["c-corr", "d-neg"]}
    for meta in metas:
        for p in meta["pairs"]:
            for m in p["masks"]:
                assert rle.decode(m["rle"], meta["height"], meta["width"]).sum() == 6


def _partly_auto(uris: dict[str, str]) -> pa.Table:
    """a-auto: its mask and EV auto-accepted; d-neg: no mask, EV auto-accepted; the rest go to people."""
    routed = _routed(uris)
    auto = {"a-auto": ["accept"], "d-neg": []}
    pairs = routed["pair_id"].to_pylist()
    mask_routes = [auto.get(p, r) for p, r in zip(pairs, routed["mask_routes"].to_pylist(), strict=True)]
    ev_routes = [
        "accept" if p in auto else r for p, r in zip(pairs, routed["ev_route"].to_pylist(), strict=True)
    ]
    routed = routed.set_column(routed.schema.get_field_index("mask_routes"), "mask_routes", [mask_routes])
    return routed.set_column(routed.schema.get_field_index("ev_route"), "ev_route", [ev_routes])


def test_only_pairs_with_a_human_route_need_people():
    routed = _partly_auto({"m1": "u", "m2": "u"})
    flags = dict(zip(routed["pair_id"].to_pylist(), needs_human(routed).to_pylist(), strict=True))
    assert flags == {"a-auto": False, "b-human": True, "c-corr": True, "d-neg": False, "e-flag": True,
                     "f-rolled": True}  # fmt: skip


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_commit_decides_the_automatic_pairs_on_the_workers_and_joins_the_reviewed_ones(
    tmp_path, kind, request
):
    """HUMAN_REVIEW decided only the pairs people saw; the commit gives the same annotations as if it had
    decided them all, on either runner, with each image's pairs in one shard sample."""
    if kind == "ray":
        request.getfixturevalue("ray_session")
    uris = {}
    for m in ("m1", "m2"):
        Image.new("RGB", (W, H)).save(tmp_path / f"{m}.png")
        uris[m] = str(tmp_path / f"{m}.png")
    routed_table = _partly_auto(uris)
    cfg = load_config(None, [f"runner={kind}"])
    ctx = RunContext(cfg, RunStore(str(tmp_path / "run")), make_runner(kind), tmp_path)
    reviewed = _decisions().filter(pc.is_in(pc.field("pair_id"), pa.array(["b-human", "c-corr", "e-flag"])))
    review = {"decisions": reviewed, "verdicts": VERDICTS.empty_table()}
    routed = _stored(ctx.store, StepRef(1, "route"), {"routed": routed_table})
    out = commit_round(ctx, 1, routed, _stored(ctx.store, StepRef(1, "human_review"), review))

    assert out["annotations"].equals(build_annotations(routed_table, _decisions(), 1))
    provenance = dict(
        zip(out["annotations"]["pair_id"].to_pylist(), out["annotations"]["provenance"].to_pylist())
    )
    assert provenance == {"a-auto": "auto", "b-human": "human", "c-corr": "corrected", "d-neg": "auto"}
    with tarfile.open(tmp_path / "run" / out.manifest["extra"]["shards"][0]) as tar:
        keys = sorted(n for n in tar.getnames() if n.endswith(".json"))
    assert keys == ["m1.json", "m2.json"]
