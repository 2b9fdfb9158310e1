"""Verifier examples from a run's human verdicts (the run-store join), the retrain API, and the metrics."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from conceptengine.engine import ids, rle
from conceptengine.engine.store import RunStore, StepRef
from conceptengine.engine.tables import VERDICTS
from conceptengine.verifiers.choices import MV
from conceptengine.verifiers.train_data import examples_from_run
from conceptengine.verifiers.train_metrics import (
    agreement_metrics,
    auroc,
    expected_calibration_error,
    share_decidable,
)

# peft 0.21 calls a transformers API that transformers 5 deprecates; nothing to act on here.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

VIEW = 32


def _shift(counts: str, h: int, w: int) -> str:
    return rle.encode(np.roll(rle.decode(counts, h, w), 9, axis=1))


def _verdict(subject: str, pair: str, task: str, annotator: str, choice: str, r: int) -> dict:
    return {
        "subject_id": subject, "pair_id": pair, "task": task, "annotator": annotator, "choice": choice,
        "probs": None, "seconds": 8.0, "round": r,
    }  # fmt: skip


def write_round(store: RunStore, oracle, r: int, media: list[str]) -> None:
    """One round as the engine stores it: routed proposals (ROUTE's output) and the committed verdicts.

    Per positive pair: its first true mask auto-accepted, a shifted copy of it sent to a human (Reject), its
    other true masks sent to humans (Accept); EV by a human for every pair. AI verdicts ride along too.
    """
    routed, verdicts = [], []
    for media_id in media:
        h, w = oracle.media_size(media_id)
        for noun_phrase in oracle.present_nps(media_id)[:3] + oracle.absent_nps(media_id)[:1]:
            pair = ids.pair_id(media_id, noun_phrase)
            truth = oracle.instances(media_id, noun_phrase)
            counts = (truth[:1] + [_shift(truth[0], h, w)] + truth[1:]) if truth else []
            routes = ["accept"] + ["human"] * (len(counts) - 1) if counts else []
            masks = [
                {
                    "instance_id": ids.instance_id(pair, i),
                    "rle": c,
                    "box_xyxy": rle.box_xyxy(c, h, w),
                    "score": 0.9,
                }
                for i, c in enumerate(counts)
            ]
            uri = str(oracle.world.image_path(media_id))
            routed.append(
                {"pair_id": pair, "media_id": media_id, "uri": uri, "width": w, "height": h,
                 "noun_phrase": noun_phrase, "masks": masks, "mask_routes": routes, "ev_route": "human"}
            )  # fmt: skip
            for i, m in enumerate(masks):
                verdicts.append(_verdict(m["instance_id"], pair, "mv", "ai:v0", "Accept", r))
                if routes[i] == "human":
                    verdicts.append(
                        _verdict(m["instance_id"], pair, "mv", "sim:a", "Reject" if i == 1 else "Accept", r)
                    )
            verdicts.append(_verdict(pair, pair, "ev", "human:ann", "Accept", r))
            verdicts.append(_verdict(pair, pair, "correction", "human:ann", "Done", r))
    store.write_step(StepRef(r, "route"), {"routed": pa.Table.from_pylist(routed)}, "cfg", f"fp{r}")
    # The verdicts are the round's once committed.
    store.write_step(
        StepRef(r, "commit"), {"verdicts": pa.Table.from_pylist(verdicts, schema=VERDICTS)}, "cfg", f"fp{r}"
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conceptengine.pipelines.demo import ontology_vocabulary
    from conceptengine.sim.oracle import Oracle
    from conceptengine.sim.render import DEMO_STYLE
    from conceptengine.sim.world import build_world
    from conceptengine.verifiers.tiny import build_tiny_verifier

    root = tmp_path_factory.mktemp("vrun")
    world = build_world(root / "world", n_train=6, n_gold=0, seed=9, image_size=96, style=DEMO_STYLE)
    oracle = Oracle(root / "world")
    store = RunStore(str(root / "run"))
    media = sorted(oracle.world.media_ids("train"))
    write_round(store, oracle, 1, media[:3])
    write_round(store, oracle, 2, media[3:])
    init = build_tiny_verifier(str(root / "init"), ontology_vocabulary(world.graph), seed=0, image_size=VIEW)
    return {"store": store, "oracle": oracle, "init": init}


def test_human_verdicts_join_the_masks_and_boxes_the_human_saw(run):
    store = run["store"]
    table = examples_from_run(store)
    verdicts = store.read_every_round("commit", "verdicts", VERDICTS).to_pylist()
    human = [v for v in verdicts if not v["annotator"].startswith("ai:") and v["task"] in ("mv", "ev")]
    assert table.num_rows == len(human)  # AI verdicts and corrections are not examples
    routed = {
        m["instance_id"]: (row, m)
        for r in (1, 2)
        for row in store.read_step(StepRef(r, "route"), "routed").to_pylist()
        for m in row["masks"]
    }
    rows = table.to_pylist()
    for ex, v in zip(
        [e for e in rows if e["task"] == "mv"], [v for v in human if v["task"] == "mv"], strict=True
    ):
        row, mask = routed[v["subject_id"]]
        assert (
            ex["masks"][0]["rle"] == mask["rle"] and ex["uri"] == row["uri"] and ex["choice"] == v["choice"]
        )
        assert ex["annotator"] == "sim:a" and ex["noun_phrase"] == row["noun_phrase"]
    for ex in (e for e in rows if e["task"] == "ev"):
        pair = ids.pair_id(ex["media_id"], ex["noun_phrase"])
        truth = run["oracle"].instances(ex["media_id"], ex["noun_phrase"])
        # shown: the auto-accepted mask and the human-accepted ones, never the human-rejected shifted copy
        assert [m["rle"] for m in ex["masks"]] == truth, pair
    assert {r["round"] for r in examples_from_run(store, up_to_round=1).to_pylist()} == {1}


def test_retrain_verifiers_gives_loadable_candidates_with_metrics(run):
    from conceptengine.training.verifier_retrain import VerifierRetrainConfig, retrain_verifiers
    from conceptengine.verifiers.transformers_backend import TransformersBackend

    cfg = VerifierRetrainConfig(
        mv_checkpoint=run["init"],
        min_examples=4,
        train={
            "steps": 2,
            "batch_size": 4,
            "view_size": VIEW,
            "holdout_share": 0.4,
            "lora_rank": 4,
            "device": "cpu",
        },
    )
    out = retrain_verifiers(run["store"], 2, cfg)
    assert set(out) == {"mv", "ev"}
    for task, res in out.items():
        assert res.path.endswith(f"models/verifier-{task}/v0002") and res.base == run["init"]
        assert res.metrics["n"] == res.base_metrics["n"] > 0
        assert isinstance(res.improved, bool)
        probs = TransformersBackend(res.path).score([[]], ["red square?"], list(MV.letters))
        assert probs.shape == (1, 5)
    skipped = retrain_verifiers(run["store"], 2, cfg.model_copy(update={"min_examples": 10_000}))
    assert skipped == {}
    with pytest.raises(ValueError, match="stesp"):
        retrain_verifiers(run["store"], 2, cfg.model_copy(update={"train": {"stesp": 3}}))


def test_retrain_verifiers_fine_tunes_grounded_scorers_on_the_verdicts(run, tmp_path):
    from conceptengine.training.verifier_retrain import VerifierRetrainConfig, retrain_verifiers
    from conceptengine.verifiers.backend_factory import make_backend
    from conceptengine.verifiers.grounded.ev_model import GroundedEVConfig, GroundedEVModel
    from conceptengine.verifiers.grounded.model import GroundedMVConfig, GroundedMVModel
    from conceptengine.verifiers.grounded.slots import ontology_slots
    from conceptengine.verifiers.settings import BackendParams

    slots = ontology_slots(run["oracle"].graph)
    mv, ev = str(tmp_path / "mv"), str(tmp_path / "ev")
    GroundedMVModel(GroundedMVConfig(slots=slots, channels=[8, 16])).save_pretrained(mv)
    GroundedEVModel(
        GroundedEVConfig(slots=slots, detector_channels=[8, 16], judge_channels=[8, 16], image_size=32)
    ).save_pretrained(ev)
    cfg = VerifierRetrainConfig(
        mv_checkpoint=mv, ev_checkpoint=ev, min_examples=4,
        train={"steps": 3, "batch_size": 8, "holdout_share": 0.4, "lora": True, "view_size": 112},
    )  # fmt: skip
    out = retrain_verifiers(run["store"], 2, cfg)
    assert set(out) == {"mv", "ev"}
    for task, res in out.items():
        assert res.path.endswith(f"models/verifier-{task}/v0002") and res.base == (mv if task == "mv" else ev)
        assert res.metrics["n"] == res.base_metrics["n"] > 0 and isinstance(res.improved, bool)
        assert make_backend(BackendParams(), res.path).task == task  # the candidate serves like its base
    # the round's step also passes an MLLM trainer's settings (lora, view_size): skipped; a typo is not
    with pytest.raises(ValueError, match=r"grounded scorer .*stesp"):
        retrain_verifiers(run["store"], 2, cfg.model_copy(update={"train": {"stesp": 8}}))


def test_retrain_verifiers_tunes_a_region_ev_judge_and_leaves_its_finder(run, tmp_path):
    import torch

    from conceptengine.training.verifier_retrain import VerifierRetrainConfig, retrain_verifiers
    from conceptengine.verifiers.backend_factory import make_backend
    from conceptengine.verifiers.grounded.ev_model import GroundedEVConfig, GroundedEVModel
    from conceptengine.verifiers.grounded.model import GroundedMVConfig, GroundedMVModel
    from conceptengine.verifiers.grounded.region_ev import RegionEVModel
    from conceptengine.verifiers.grounded.slots import ontology_slots
    from conceptengine.verifiers.settings import BackendParams

    slots = ontology_slots(run["oracle"].graph)
    torch.manual_seed(0)
    finder = GroundedEVModel(
        GroundedEVConfig(slots=slots, detector_channels=[8, 16], judge_channels=[8, 16], image_size=32,
                         silhouette=True, centre_offsets=True)
    )  # fmt: skip
    with torch.no_grad():  # every pixel foreground: each image's unboxed part is a piece to judge
        finder.foreground.head[-1].bias.fill_(20.0)
    base = RegionEVModel.from_parts(finder, GroundedMVModel(GroundedMVConfig(slots=slots, channels=[8, 16])))
    ev = str(tmp_path / "ev")
    base.save_pretrained(ev)
    cfg = VerifierRetrainConfig(
        mv_checkpoint=ev, ev_checkpoint=ev, tasks=["ev"], min_examples=4,
        train={"steps": 3, "batch_size": 8, "holdout_share": 0.4},
    )  # fmt: skip
    res = retrain_verifiers(run["store"], 2, cfg)["ev"]
    assert res.metrics["n"] == res.base_metrics["n"] > 0 and isinstance(res.improved, bool)
    assert make_backend(BackendParams(), res.path).task == "ev"
    tuned = RegionEVModel.from_pretrained(res.path)
    for name in ("detector", "missed", "offset", "foreground"):  # found outside autograd: untouched
        for a, b in zip(
            getattr(tuned, name).state_dict().values(), getattr(base, name).state_dict().values()
        ):
            assert torch.equal(a, b), name
    assert not torch.equal(tuned.judge.needs.weight, base.judge.needs.weight)  # the verdicts moved the judge


# -- metrics ---------------------------------------------------------------------------------------------
def test_calibration_separability_and_per_choice_agreement():
    p = np.array([0.95, 0.9, 0.8, 0.3, 0.1, 0.05])
    y = np.array([1, 1, 0, 0, 0, 0], dtype=float)
    assert auroc(p, y) == 1.0 and auroc(1 - p, y) == 0.0 and auroc(p, np.ones(6)) is None
    assert expected_calibration_error(np.full(4, 0.75), np.array([1, 1, 1, 0.0])) == 0.0
    assert expected_calibration_error(np.full(4, 1.0), np.zeros(4)) == 1.0
    assert share_decidable(p, y, accept=True) == pytest.approx(2 / 6)  # the third (0.8) is a human reject
    assert share_decidable(p, y, accept=False) == pytest.approx(4 / 6)
    probs = np.zeros((6, len(MV)))
    probs[:, 0], probs[:, 4] = p, 1 - p
    human = ["Accept", "Accept", "Reject", "Reject", "Reject", "Flag label"]
    m = agreement_metrics(probs, human, MV)
    assert m["accuracy"] == pytest.approx(4 / 6)  # one human Reject and the Flag label are missed
    assert m["per_choice"]["Accept"] == {"support": 2, "predicted": 3, "precision": 2 / 3, "recall": 1.0}
    assert m["per_choice"]["Flag label"]["recall"] == 0.0
    assert m["confusion"]["Reject"] == {"Accept": 1, "Reject": 2}
    with pytest.raises(ValueError, match="does not match"):
        agreement_metrics(probs[:, :3], human, MV)
