"""The calibrate step on a real run store: which verdicts become calibration data, and what it writes.

Round tables are built with the real `route()` and stored with the real RunStore, as the pipeline does;
only the verifier scores and the human answers are made up, so each expectation can be counted by hand.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from conceptengine.config import load_config
from conceptengine.engine.runner import make_runner
from conceptengine.engine.steps import StepResult
from conceptengine.engine.store import RunStore, StepRef
from conceptengine.engine.tables import VERDICTS
from conceptengine.round.ai_verify import round_verifiers
from conceptengine.round.calibrate import DATA, calibrate_round, gather, thresholds_of
from conceptengine.round.context import RunContext, RunError
from conceptengine.verifiers.routing import NO_THRESHOLDS, route
from conceptengine.verifiers.stage import VERIFIED

SURE, UNSURE, WRONG = 0.99, 0.5, 0.01


def _row(pid: str, r: int, p_mv: float, p_ev: float, version: str) -> dict:
    return {
        "pair_id": pid, "media_id": "m", "uri": "u", "width": 1, "height": 1, "noun_phrase": "np",
        "node_id": None, "origin": "caption", "round": r, "presence": 0.5, "model_version": "s", "error": None,
        "masks": [{"instance_id": f"{pid}:000", "rle": "", "box_xyxy": [0, 0, 1, 1], "score": 1.0}],
        "mv_probs": [[p_mv, 0, 0, 0, 1 - p_mv]], "ev_probs": [p_ev, 1 - p_ev, 0, 0, 0, 0],
        "verifier_version": version,
    }  # fmt: skip


def _verified(r: int, version: str) -> pa.Table:
    """60 sure-good, 60 sure-bad and 20 unsure pairs of one mask each (MV and EV scored alike)."""
    scores = [SURE] * 60 + [WRONG] * 60 + [UNSURE] * 20
    return pa.Table.from_pylist(
        [_row(f"r{r}-{i:03d}", r, p, p, version) for i, p in enumerate(scores)], VERIFIED
    )


def _human(routed: pa.Table, r: int) -> pa.Table:
    """A careful human: accepts the sure-good items and every other unsure one; answers only what was
    routed to humans."""
    rows = []
    for i, row in enumerate(routed.to_pylist()):
        p = row["mv_probs"][0][0]
        good = p == pytest.approx(SURE) or (p == pytest.approx(UNSURE) and i % 2 == 0)
        for task, subject, how in (
            ("mv", row["masks"][0]["instance_id"], row["mask_routes"][0]),
            ("ev", row["pair_id"], row["ev_route"]),
        ):
            if how == "human":
                rows.append({"subject_id": subject, "pair_id": row["pair_id"], "task": task,
                             "annotator": "sim:a", "choice": "Accept" if good else "Reject",
                             "probs": None, "seconds": 1.0, "round": r})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=VERDICTS)


def _ctx(tmp_path, *overrides: str) -> RunContext:
    """Every pair has a mask: EV's calibration counts them all only with ev_scope decided_masks."""
    cfg = load_config(
        None,
        ["runner=local", "routing.min_calibration_items=50", "routing.ev_scope=decided_masks", *overrides],
    )
    return RunContext(cfg, RunStore(str(tmp_path / "run")), make_runner("local"), tmp_path)


def _verify_step(ctx: RunContext, r: int, version: str, verifiers: list[str]) -> StepResult:
    """The round's ai_verify output and the verifiers ([mv, ev]) its step records."""
    table = _verified(r, version)
    ref = StepRef(r, "ai_verify")
    manifest = ctx.store.write_step(ref, {"verified": table}, ctx.config_hash, "x", {"verifiers": verifiers})
    return StepResult(ref, {"verified": table}, manifest, False)


def _play_round(
    ctx: RunContext, r: int, version: str = "v1", verifiers: list[str] | None = None
) -> tuple[StepResult, pa.Table]:
    """calibrate -> (verify) -> route -> (human answers) for round r, stored as the pipeline stores them."""
    verifiers = verifiers or [version, version]
    calibrated = calibrate_round(ctx, r, verifiers)
    verified = _verify_step(ctx, r, version, verifiers)
    cfg = ctx.cfg.routing
    routed = route(
        verified["verified"], thresholds_of(calibrated), cfg.audit_share, ctx.cfg.seed, cfg.ev_scope
    )
    ctx.store.write_step(StepRef(r, "route"), {"routed": routed}, ctx.config_hash, "x")
    ctx.store.write_step(StepRef(r, "human_review"), {"verdicts": _human(routed, r)}, ctx.config_hash, "x")
    return calibrated, routed


def test_round_one_has_no_data_and_round_two_calibrates_on_it(tmp_path) -> None:
    ctx = _ctx(tmp_path)
    first, routed1 = _play_round(ctx, 1)
    assert thresholds_of(first) == NO_THRESHOLDS and first.manifest["extra"]["calibration_items"] == {
        "mv": 0,
        "ev": 0,
    }
    assert set(routed1["ev_route"].to_pylist()) == {"human"}  # safe by construction

    second, routed2 = _play_round(ctx, 2)
    extra = second.manifest["extra"]
    assert extra["calibration_items"] == {"mv": 140, "ev": 140}  # every round-1 verdict was score-blind
    # 60 sure-good items, all accepted: the accept region at 0.51 .. 0.99 holds exactly those; at 0.50
    # the coin-flip items join (70/80) and the sequence stops. The reject side mirrors it.
    th = thresholds_of(second)
    assert th["mv"].accept == 0.51 and th["mv"].reject == 0.49 and th["ev"].accept == 0.51
    table = second["thresholds"].to_pylist()
    mv_accept = next(r for r in table if r["task"] == "mv" and r["side"] == "accept")
    assert (mv_accept["n"], mv_accept["k"], mv_accept["precision"]) == (60, 60, 1.0)
    assert mv_accept["bound"] == pytest.approx(0.05 ** (1 / 60), abs=1e-6)
    assert extra["thresholds"]["mv"] == {"accept": 0.51, "reject": 0.49}

    # Round 2: sure items are decided automatically except the audit draw; unsure ones go to humans.
    routes = [r[0] for r in routed2["mask_routes"].to_pylist()]
    audits = [a[0] for a in routed2["mask_audit"].to_pylist()]
    assert routes[120:] == ["human"] * 20 and all(a is None for a in audits[120:])
    n_audit = sum(a is not None for a in audits)
    assert 0 < n_audit < 40 and routes.count("human") == 20 + n_audit

    # Round 3 calibrates on round 1 plus only the score-blind part of round 2 (drawn items, answered).
    data = gather(ctx, 3)
    r2 = data.filter(pa.compute.equal(data["round"], 2))
    drawn = sum(c[0] for c in routed2["mask_calibration"].to_pylist())
    assert sum(t == "mv" for t in r2["task"].to_pylist()) == drawn
    assert sum(a is not None for a in r2["audit"].to_pylist()) >= n_audit  # every audit is data
    third, _ = _play_round(ctx, 3)
    assert third.manifest["extra"]["audit"]["mv"]["audited"] == n_audit
    assert third.manifest["extra"]["audit"]["mv"]["agreed"] == n_audit  # the careful human always agrees


def test_another_verifier_version_starts_from_no_data(tmp_path) -> None:
    ctx = _ctx(tmp_path)
    _play_round(ctx, 1, version="v1")
    second, routed = _play_round(ctx, 2, version="v2")
    assert thresholds_of(second) == NO_THRESHOLDS
    assert second.manifest["extra"]["other_version_items"] == 280
    assert second["data"].schema == DATA and second["data"].num_rows == 0
    assert set(routed["ev_route"].to_pylist()) == {"human"}


def test_a_new_mv_checkpoint_leaves_ev_its_calibration_data(tmp_path) -> None:
    ctx = _ctx(tmp_path)
    _play_round(ctx, 1, version="mv-a+ev-a", verifiers=["models/mv-a", "models/ev-a"])
    second, _ = _play_round(ctx, 2, version="mv-b+ev-a", verifiers=["models/mv-b", "models/ev-a"])
    extra = second.manifest["extra"]
    assert extra["calibration_items"] == {"mv": 0, "ev": 140} and extra["other_version_items"] == 140
    th = thresholds_of(second)
    assert not th["mv"].any and th["ev"].accept == 0.51  # EV keeps deciding; the new MV starts over


def test_fixed_mode_applies_the_config_and_reports_its_evidence(tmp_path) -> None:
    ctx = _ctx(tmp_path, "routing.mode=fixed", "routing.mv_accept=0.6", "routing.mv_reject=0.4")
    first, _ = _play_round(ctx, 1)
    assert thresholds_of(first)["mv"].accept == 0.6  # fixed thresholds apply from round 1
    second, _ = _play_round(ctx, 2)
    mv_accept = next(
        r for r in second["thresholds"].to_pylist() if r["task"] == "mv" and r["side"] == "accept"
    )
    assert mv_accept["threshold"] == 0.6 and mv_accept["mode"] == "fixed"
    n_human = second.manifest["extra"]["calibration_items"]["mv"]
    assert 0 < n_human < 140 and mv_accept["n"] <= n_human  # only round 1's audited + unsure items


def test_human_mode_sends_everything_to_humans_even_with_ample_data(tmp_path) -> None:
    ctx = _ctx(tmp_path, "routing.mode=human", "routing.min_calibration_items=10")
    _play_round(ctx, 1)
    second, routed = _play_round(ctx, 2)
    assert second.manifest["extra"]["calibration_items"]["mv"] == 140  # the data is there ...
    assert thresholds_of(second) == NO_THRESHOLDS  # ... and still nothing is decided automatically
    assert set(routed["ev_route"].to_pylist()) == {"human"}
    assert {r for routes in routed["mask_routes"].to_pylist() for r in routes} == {"human"}


def test_the_step_is_reused_and_needs_every_earlier_round(tmp_path) -> None:
    ctx = _ctx(tmp_path)
    _play_round(ctx, 1)
    first = calibrate_round(ctx, 2, ["v1", "v1"])
    again = calibrate_round(ctx, 2, ["v1", "v1"])
    assert again.reused and again.fingerprint == first.fingerprint
    with pytest.raises(RunError, match="round 2 has no finished route step"):
        calibrate_round(ctx, 3, ["v1", "v1"])


def test_by_default_ev_calibrates_on_the_pairs_without_masks_it_decides(tmp_path) -> None:
    ctx = _ctx(tmp_path, "routing.ev_scope=no_masks")
    verified = _verified(1, "v1").to_pylist()
    for row in verified[::2]:  # every other pair: SAM 3 proposed nothing
        row["masks"], row["mv_probs"] = [], []
    table = pa.Table.from_pylist(verified, VERIFIED)
    ctx.store.write_step(
        StepRef(1, "ai_verify"), {"verified": table}, ctx.config_hash, "x", {"verifiers": ["v1"] * 2}
    )
    calibrated = calibrate_round(ctx, 1, ["v1", "v1"])
    routed = route(table, thresholds_of(calibrated), 0.0, ctx.cfg.seed, "no_masks")
    ctx.store.write_step(StepRef(1, "route"), {"routed": routed}, ctx.config_hash, "x")
    ctx.store.write_step(
        StepRef(1, "human_review"), {"verdicts": _human_any(routed, 1)}, ctx.config_hash, "x"
    )
    data = gather(ctx, 2)
    ev = data.filter(pa.compute.equal(data["task"], "ev"))["subject_id"].to_pylist()
    assert sorted(ev) == sorted(r["pair_id"] for r in verified[::2])  # the 70 pairs without a mask
    assert sum(t == "mv" for t in data["task"].to_pylist()) == 70  # every mask still counts for MV


def _human_any(routed: pa.Table, r: int) -> pa.Table:
    """A human who accepts everything routed to humans, pairs without masks included."""
    rows = []
    for row in routed.to_pylist():
        items = [
            ("mv", m["instance_id"], how) for m, how in zip(row["masks"], row["mask_routes"], strict=True)
        ]
        for task, subject, how in [*items, ("ev", row["pair_id"], row["ev_route"])]:
            if how == "human":
                rows.append({"subject_id": subject, "pair_id": row["pair_id"], "task": task,
                             "annotator": "sim:a", "choice": "Accept", "probs": None, "seconds": 1.0,
                             "round": r})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=VERDICTS)


def test_a_served_verifier_is_known_by_its_model_names(tmp_path) -> None:
    served = ["verifier.backend=openai", "verifier.openai.model=mllm-a"]
    assert round_verifiers(_ctx(tmp_path, *served), 1) == ["mllm-a", "mllm-a"]
    both = _ctx(tmp_path, *served, "verifier.openai.ev_model=mllm-e")
    assert round_verifiers(both, 1) == ["mllm-a", "mllm-e"]
    # Another served model behind the same config is another verifier: round 1's answers do not calibrate it.
    ctx = _ctx(tmp_path, *served)
    _play_round(ctx, 1, verifiers=round_verifiers(ctx, 1))
    renamed = _ctx(tmp_path, "verifier.backend=openai", "verifier.openai.model=mllm-b")
    extra = calibrate_round(renamed, 2, round_verifiers(renamed, 2)).manifest["extra"]
    assert extra["calibration_items"] == {"mv": 0, "ev": 0} and extra["other_version_items"] == 280
