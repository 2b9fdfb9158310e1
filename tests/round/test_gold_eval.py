"""Gold metrics by group (held-out concepts, a shifted media domain, the rest) and the round summary's keys.

The detector is replaced by made-up predictions, so every expected number can be worked out by hand.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from conceptengine.config import load_config
from conceptengine.engine import rle
from conceptengine.engine.runner import make_runner
from conceptengine.engine.steps import StepResult
from conceptengine.engine.store import RunStore, StepRef
from conceptengine.engine.tables import ANNOTATIONS, GOLD, MEDIA, PAIRS, PROPOSALS
from conceptengine.model.metrics import PairGT, PairPred
from conceptengine.round.bootstrap import with_media_domain
from conceptengine.round.context import RunContext
from conceptengine.round.gold_eval import gold_metrics, pair_groups
from conceptengine.round.registry import ModelVersion
from conceptengine.sim.taxonomy import shapes_graph

SHIFTED = "rendered-shapes-shifted"
SIZE = 8
MASK = rle.encode(np.pad(np.ones((4, 4), dtype=bool), 2))

# (media_id, domain, noun phrase, positive?): "circle" is a round shape (the reported family).
PAIRS_SPEC = [
    ("m1", "rendered-shapes", "circle", True),
    ("m1", "rendered-shapes", "square", True),
    ("m1", "rendered-shapes", "star", False),
    ("m2", SHIFTED, "circle", True),
    ("m2", SHIFTED, "square", True),
    ("m2", SHIFTED, "star", False),
]


def _annotations() -> pa.Table:
    rows = [
        {
            "pair_id": f"{m}-{np_}", "media_id": m, "uri": f"/x/{m}.png", "width": SIZE, "height": SIZE,
            "noun_phrase": np_, "is_exhaustive": True, "is_negative": not pos, "provenance": "oracle", "round": 0,
            "masks": [{"instance_id": f"{m}-{np_}:000", "rle": MASK, "box_xyxy": [2, 2, 6, 6], "score": 1.0}]
            if pos else [],
        }
        for m, _, np_, pos in PAIRS_SPEC
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=ANNOTATIONS)


def _media() -> pa.Table:
    rows = [
        {"media_id": m, "uri": f"/x/{m}.png", "width": SIZE, "height": SIZE, "domain": d, "split": "gold",
         "error": None}
        for m, d in (("m1", "rendered-shapes"), ("m2", SHIFTED), ("m3", "rendered-shapes"))
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=MEDIA)


def test_gold_pairs_carry_their_media_domain() -> None:
    gold = with_media_domain(_annotations(), _media())
    assert gold.schema.equals(GOLD)
    assert gold["domain"].to_pylist() == [d for _, d, _, _ in PAIRS_SPEC]
    orphan = with_media_domain(_annotations(), _media().slice(1))  # m1 was never ingested
    assert orphan["domain"].to_pylist()[:3] == [None, None, None]


def test_pair_groups_split_reported_domain_and_seen() -> None:
    gold = with_media_domain(_annotations(), _media())
    graph = shapes_graph()
    targets = graph.subtrees(["round shape"], "test")

    def concept(np_: str) -> str:
        return "reported" if graph.resolve(np_).node_id in targets else "other"

    groups = pair_groups(gold, concept, SHIFTED)
    assert groups["reported"] == {"m1-circle", "m2-circle"}
    assert groups["domain"] == {"m2-circle", "m2-square", "m2-star"}
    assert groups["seen"] == {"m1-square", "m1-star"}  # in neither: what must not be forgotten
    assert set(pair_groups(gold, None, SHIFTED)) == {"domain", "seen"}
    assert pair_groups(gold, None, SHIFTED)["seen"] == {"m1-circle", "m1-square", "m1-star"}
    assert pair_groups(gold, None, None) == {}
    no_domain = gold.drop_columns(["domain"])  # a run begun before gold carried domains
    assert pair_groups(no_domain, concept, SHIFTED)["domain"] == set()


@pytest.fixture
def fake_detector(monkeypatch):
    """The model finds every object of shifted images and nothing in the others; counts its passes."""
    from conceptengine.model.sam3_backend import Sam3Detector
    from conceptengine.round import gold_eval

    calls = []

    def predict_gold(detector, gold):
        calls.append(gold.num_rows)
        gts, preds = [], []
        for r in gold.to_pylist():
            masks = [m["rle"] for m in r["masks"]]
            gts.append(PairGT(r["pair_id"], SIZE, SIZE, masks, concept=r["noun_phrase"]))
            found = masks if r["media_id"] == "m2" else []
            preds.append(PairPred(r["pair_id"], SIZE, SIZE, found, [0.9] * len(found)))
        return gts, preds

    monkeypatch.setattr(gold_eval, "predict_gold", predict_gold)
    monkeypatch.setattr(Sam3Detector, "from_pretrained", classmethod(lambda cls, *a, **k: object()))
    return calls


def _ctx(tmp_path, overrides: list[str]) -> RunContext:
    world = tmp_path / "world"
    world.mkdir(exist_ok=True)
    shapes_graph().to_yaml(world / "ontology.yaml")
    cfg = load_config(None, ["runner=local", *overrides])
    return RunContext(cfg, RunStore(str(tmp_path / "run")), make_runner("local"), tmp_path)


def _gold_step(ctx: RunContext) -> StepResult:
    table = with_media_domain(_annotations(), _media())
    manifest = ctx.store.write_step(StepRef(0, "gold"), {"gold": table}, ctx.config_hash, "fp", {})
    return StepResult(StepRef(0, "gold"), {"gold": table}, manifest, reused=False)


def test_gold_metrics_report_the_domain_the_held_family_and_the_rest(tmp_path, fake_detector) -> None:
    ctx = _ctx(tmp_path, ['gold.report_concepts=["round shape"]', f"gold.report_domain={SHIFTED}"])
    version = ModelVersion("v0001", str(tmp_path / "m"), 1)
    out = gold_metrics(ctx, version, _gold_step(ctx))
    assert out["domain_cgF1"] == 100.0  # every shifted pair right
    assert out["seen_cgF1"] == 0.0  # nothing found on the plain image
    assert 0 < out["gold_cgF1"] < 100 and "reported_cgF1" in out
    assert {"domain_IL_MCC", "domain_pmF1", "seen_IL_MCC", "seen_pmF1"} <= set(out)
    # Cached per version and gold set: promotion and the round table share one detector pass.
    assert gold_metrics(ctx, version, _gold_step(ctx)) == out and fake_detector == [6]


def test_gold_metrics_without_a_report_domain(tmp_path, fake_detector) -> None:
    ctx = _ctx(tmp_path, [])
    out = gold_metrics(ctx, ModelVersion("v0000", str(tmp_path / "m"), 0), _gold_step(ctx))
    assert out["domain_cgF1"] is None
    assert "seen_cgF1" not in out and "reported_cgF1" not in out  # nothing to tell apart
    ctx = _ctx(tmp_path, ["gold.report_domain=a-domain-with-no-gold-images"])
    out = gold_metrics(ctx, ModelVersion("v0000", str(tmp_path / "m"), 0), _gold_step(ctx))
    assert out["domain_cgF1"] is None and out["seen_cgF1"] == out["gold_cgF1"]


def _step(name: str, extra: dict, tables: dict | None = None) -> StepResult:
    return StepResult(StepRef(1, name), tables or {}, {"extra": extra}, reused=True)


def test_round_summary_carries_domain_seen_candidate_and_promotion() -> None:
    from conceptengine.pipelines.image import summarize

    pairs = pa.Table.from_pylist(
        [{"pair_id": "p", "media_id": "m", "origin": "caption", "round": 1}], schema=PAIRS
    )
    proposals = PROPOSALS.empty_table()
    scores = {"gold_cgF1": 40.0, "domain_cgF1": 30.0, "reported_cgF1": 20.0, "seen_cgF1": 50.0}
    head = [_step("propose_nps", {}, {"pairs": pairs}), _step("propose_masks", {}, {"proposals": proposals})]

    without = summarize(1, [*head, _step("evaluate", {"model_version": "v0000"} | scores)])
    assert without["candidate_cgF1"] is None and without["promoted"] is None  # no retrain this round
    assert {k: without[k] for k in scores} == scores

    promote = _step("promote", {"candidate_cgF1": 42.5, "base_cgF1": 40.0, "promoted": True})
    evaluate = _step("evaluate", {"model_version": "v0001"} | scores)
    summary = summarize(1, [*head, promote, evaluate])
    assert summary["candidate_cgF1"] == 42.5 and summary["promoted"] is True
    assert summary["domain_cgF1"] == 30.0 and summary["seen_cgF1"] == 50.0
