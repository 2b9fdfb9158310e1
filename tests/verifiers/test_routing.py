from __future__ import annotations

import pyarrow as pa
import pytest
from pydantic import ValidationError

from conceptengine.verifiers.routing import (
    NO_THRESHOLDS,
    RoutingConfig,
    TaskThresholds,
    audit_draw,
    fixed_thresholds,
    human_share,
    route,
    route_counts,
)
from conceptengine.verifiers.stage import VERIFIED

CFG = fixed_thresholds(RoutingConfig(mv_accept=0.8, mv_reject=0.2, ev_accept=0.7, ev_reject=0.3))


def _mv(p: float) -> list[float]:
    rest = (1 - p) / 4
    return [p, rest, rest, rest, rest]


def _ev(p: float) -> list[float]:
    rest = (1 - p) / 5
    return [p, rest, rest, rest, rest, rest]


def _row(pid: str, mv: list[float], ev: float | None, error: str | None = None) -> dict:
    masks = [
        {"instance_id": f"{pid}:{i:03d}", "rle": "", "box_xyxy": [0, 0, 1, 1], "score": 1.0}
        for i in range(len(mv))
    ]
    verified = error is None
    return dict(  # noqa: C408 - keyword form reads like the schema
        pair_id=pid, media_id="m", uri="u", width=1, height=1, noun_phrase="np", node_id=None,
        origin="caption", round=1, presence=0.5, masks=masks, model_version="s", error=error,
        mv_probs=[_mv(p) for p in mv] if verified else None, ev_probs=_ev(ev) if verified else None,
        verifier_version="v1" if verified else None,
    )  # fmt: skip


def _table(*rows: dict) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=VERIFIED)


def test_every_route_case() -> None:
    t = route(
        _table(
            _row("all-accepted", [0.95, 0.81], ev=0.9),  # every mask auto + EV accept -> accept
            _row("all-rejected", [0.05, 0.2], ev=0.1),  # every mask auto + EV reject -> reject
            _row("mixed-auto", [0.9, 0.1], ev=0.5),  # every mask auto, EV in the band -> human
            _row("one-unsure", [0.9, 0.5], ev=0.99),  # one mask to a human -> EV to a human too
            _row("negative-sure", [], ev=0.75),  # no masks, EV says nothing is there -> accept
            _row("negative-missed", [], ev=0.3),  # no masks, EV says something is missing -> reject
            _row("failed", [0.9], ev=None, error="ai_verify: image does not decode"),
        ),
        CFG,
        ev_scope="decided_masks",
    )
    got = dict(zip(t["pair_id"].to_pylist(), zip(t["mask_routes"].to_pylist(), t["ev_route"].to_pylist())))
    assert got == {
        "all-accepted": (["accept", "accept"], "accept"),
        "all-rejected": (["reject", "reject"], "reject"),
        "mixed-auto": (["accept", "reject"], "human"),
        "one-unsure": (["accept", "human"], "human"),
        "negative-sure": ([], "accept"),
        "negative-missed": ([], "reject"),
        "failed": (None, None),
    }
    assert t.schema.field("mask_routes").type == pa.list_(pa.string())
    assert route_counts(t) == {
        "mv": {"auto_accepted": 4, "auto_rejected": 3, "to_human": 1, "audited": 0, "errored": 1},
        "ev": {"auto_accepted": 2, "auto_rejected": 2, "to_human": 2, "audited": 0, "errored": 1},
    }
    assert human_share(route_counts(t)) == round(3 / 14, 4)  # 1 mask + 2 pairs of 8 masks + 6 pairs
    # Thresholds exist for both tasks and nothing was drawn: no human review here was score-blind.
    assert (
        t["mask_calibration"].to_pylist()[3] == [False, False] and t["ev_calibration"].to_pylist()[3] is False
    )


def test_by_default_ev_decides_only_pairs_without_masks() -> None:
    t = route(
        _table(
            _row("all-accepted", [0.95, 0.81], ev=0.9),  # masks decided, but EV saw boxes: a human's call
            _row("all-rejected", [0.05, 0.2], ev=0.1),
            _row("negative-sure", [], ev=0.75),
            _row("negative-missed", [], ev=0.3),
        ),
        CFG,
    )
    assert t["mask_routes"].to_pylist() == [["accept", "accept"], ["reject", "reject"], [], []]
    assert t["ev_route"].to_pylist() == ["human", "human", "accept", "reject"]
    with pytest.raises(ValueError, match="ev_scope"):
        route(_table(_row("p", [], ev=0.5)), CFG, ev_scope="everything")


def test_rerouting_replaces_the_old_decision() -> None:
    t = route(_table(_row("p", [0.5], ev=0.5)), CFG)
    wide = fixed_thresholds(RoutingConfig(mv_accept=0.5, mv_reject=0.0, ev_accept=0.5, ev_reject=0.0))
    again = route(t, wide, ev_scope="decided_masks")
    assert again.column_names.count("mask_routes") == 1
    assert again["mask_routes"].to_pylist() == [["accept"]] and again["ev_route"].to_pylist() == ["accept"]


def test_equal_thresholds_leave_no_human_band() -> None:
    cfg = fixed_thresholds(RoutingConfig(mv_accept=0.5, mv_reject=0.5, ev_accept=0.5, ev_reject=0.5))
    t = route(_table(_row("p", [0.5, 0.49], ev=0.51)), cfg, ev_scope="decided_masks")
    assert t["mask_routes"].to_pylist() == [["accept", "reject"]] and t["ev_route"].to_pylist() == ["accept"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mv_accept": 0.3, "mv_reject": 0.6}, "mv_reject"),
        ({"ev_accept": 0.2, "ev_reject": 0.25}, "ev_reject"),
        ({"ev_accept": 1.5}, "ev_accept"),
        ({"mv_reject": -0.1}, "mv_reject"),
        ({"mv_acept": 0.9}, "mv_acept"),
        ({"mode": "learned"}, "mode"),
        ({"audit_share": 1.5}, "audit_share"),
        ({"target_precision": 1.0}, "target_precision"),
        ({"confidence": 0.0}, "confidence"),
        ({"min_calibration_items": 0}, "min_calibration_items"),
        ({"ev_scope": "all"}, "ev_scope"),
    ],
)
def test_invalid_thresholds_are_rejected_with_the_field_name(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        RoutingConfig(**kwargs)


def test_malformed_input_is_named() -> None:
    bad = _row("p", [0.9, 0.9], ev=0.9)
    bad["mv_probs"] = bad["mv_probs"][:1]
    with pytest.raises(ValueError, match="1 mv_probs for 2 masks"):
        route(_table(bad), CFG)
    with pytest.raises(KeyError, match="mv_probs"):
        route(_table(_row("p", [], ev=0.5)).drop_columns(["mv_probs"]), CFG)
    with pytest.raises(KeyError, match="route\\(\\) first"):
        route_counts(_table(_row("p", [], ev=0.5)))
    with pytest.raises(ValueError, match="exactly \\['mv', 'ev'\\]"):
        route(_table(_row("p", [], ev=0.5)), {"mv": TaskThresholds()})
    with pytest.raises(ValueError, match="audit_share"):
        route(_table(_row("p", [], ev=0.5)), CFG, audit_share=2.0)
    with pytest.raises(ValueError, match="reject threshold \\(0.6\\) must be <= accept"):
        TaskThresholds(accept=0.4, reject=0.6)


def test_without_thresholds_everything_goes_to_humans_and_is_calibration_data() -> None:
    t = route(_table(_row("a", [0.99, 0.01], ev=0.99), _row("b", [], ev=0.0)), NO_THRESHOLDS, audit_share=0.5)
    assert t["mask_routes"].to_pylist() == [["human", "human"], []]
    assert t["ev_route"].to_pylist() == ["human", "human"]
    assert t["mask_audit"].to_pylist() == [[None, None], []] and t["ev_audit"].to_pylist() == [None, None]
    assert t["mask_calibration"].to_pylist() == [[True, True], []]
    assert t["ev_calibration"].to_pylist() == [True, True]


def test_an_audit_share_of_one_sends_every_automatic_decision_to_humans() -> None:
    t = route(_table(_row("a", [0.95, 0.05], ev=0.9), _row("b", [], ev=0.1)), CFG, audit_share=1.0)
    assert t["mask_routes"].to_pylist() == [["human", "human"], []]
    assert t["ev_route"].to_pylist() == ["human", "human"]
    # Each audit records the decision it checks; pair a's EV went to a human anyway (its masks did).
    assert t["mask_audit"].to_pylist() == [["accept", "reject"], []]
    assert t["ev_audit"].to_pylist() == [None, "reject"]
    assert t["ev_calibration"].to_pylist() == [True, True]
    assert route_counts(t)["mv"]["audited"] == 2 and route_counts(t)["ev"]["audited"] == 1


def test_the_audit_draw_is_a_stable_uniform_share_of_the_automatic_decisions() -> None:
    rows = [_row(f"pair-{i:04d}", [0.95, 0.5], ev=0.9) for i in range(1500)]
    t = route(_table(*rows), CFG, audit_share=0.2, seed=3)
    audits = [a[0] for a in t["mask_audit"].to_pylist()]
    # Sure masks (0.95) are audited at the share; unsure ones (0.5) go to humans anyway, never as audits.
    assert abs(sum(a == "accept" for a in audits) / len(rows) - 0.2) < 0.03
    assert all(a[1] is None for a in t["mask_audit"].to_pylist())
    # Calibration data: every drawn mask, whatever its score, and nothing else.
    drawn = [[audit_draw(3, "mv", m["instance_id"]) < 0.2 for m in r["masks"]] for r in rows]
    assert t["mask_calibration"].to_pylist() == drawn
    # Same items, any row order, same decisions; another seed draws other items.
    again = route(_table(*reversed(rows)), CFG, audit_share=0.2, seed=3)
    assert dict(zip(again["pair_id"].to_pylist(), again["mask_audit"].to_pylist())) == dict(
        zip(t["pair_id"].to_pylist(), t["mask_audit"].to_pylist())
    )
    other = route(_table(*rows), CFG, audit_share=0.2, seed=4)
    assert other["mask_audit"].to_pylist() != t["mask_audit"].to_pylist()


def test_one_sided_thresholds_decide_only_their_side() -> None:
    only_accept = {"mv": TaskThresholds(accept=0.9), "ev": TaskThresholds(reject=0.2)}
    t = route(_table(_row("a", [0.95, 0.01], ev=0.1), _row("b", [0.95], ev=0.99)), only_accept)
    assert t["mask_routes"].to_pylist() == [["accept", "human"], ["accept"]]
    assert t["ev_route"].to_pylist() == ["human", "human"]  # a: a mask is with a human; b: no accept side
