"""SA-Co metrics on cases small enough to compute by hand (the arithmetic is in the comments)."""

import math

import numpy as np
import pytest

from conceptengine.engine import rle
from conceptengine.model.metrics import TAUS, PairGT, PairPred, mcc, saco_metrics, saco_metrics_by_concept

H, W = 2, 100  # masks are column intervals [a, b) over both rows, so IoU = overlap / union of intervals


def band(a: int, b: int) -> str:
    m = np.zeros((H, W), dtype=bool)
    m[:, a:b] = True
    return rle.encode(m)


def gt(key, *masks, concept=None):
    return PairGT(key, H, W, list(masks), concept=concept)


def pred(key, *masks_scores):
    return PairPred(key, H, W, [m for m, _ in masks_scores], [s for _, s in masks_scores])


def test_taus_are_the_ten_sa_co_thresholds():
    assert TAUS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_perfect_prediction_scores_100():
    # Positive pair with 2 instances predicted exactly, negative pair predicted empty.
    # F1 = 1 at every tau -> pmF1 = 1. IL: TP=1, TN=1, FP=FN=0 -> MCC = 1*1/sqrt(1*1*1*1) = 1. cgF1 = 100.
    gold = [gt("a", band(0, 10), band(50, 70)), gt("b")]
    preds = [pred("a", (band(0, 10), 0.9), (band(50, 70), 0.8))]
    m = saco_metrics(gold, preds)
    assert m.pmF1 == 1.0 and m.IL_MCC == 1.0 and m.cgF1 == 100.0
    assert m.counts["il_tp"] == 1 and m.counts["il_tn"] == 1 and m.counts["positive_pairs"] == 1


def test_iou_072_is_a_true_positive_up_to_tau_070_only():
    # GT [0,100), prediction [0,72): IoU = 72/100 = 0.72.
    # tau in {0.50,0.55,0.60,0.65,0.70}: TP=1 -> F1=1; tau in {0.75..0.95}: TP=0, FP=1, FN=1 -> F1=0.
    # pmF1 = 5/10 = 0.5; IL: TP=1 (pair a), TN=1 (pair b) -> MCC=1; cgF1 = 100*0.5*1 = 50.
    gold = [gt("a", band(0, 100)), gt("b")]
    m = saco_metrics(gold, [pred("a", (band(0, 72), 0.9))])
    assert [m.f1_at[t] for t in TAUS] == [1.0] * 5 + [0.0] * 5
    assert m.pmF1 == pytest.approx(0.5)
    assert m.cgF1 == pytest.approx(50.0)


def test_hungarian_matching_beats_greedy():
    # GT g0=[0,10), g1=[4,14); predictions p0=[0,12) (score .9), p1=[0,8) (score .8).
    # IoU(p0,g0)=10/12=.833  IoU(p0,g1)=8/14=.571  IoU(p1,g0)=8/10=.8  IoU(p1,g1)=4/14=.286
    # Greedy by score: p0 takes g0, p1 is left with g1 (.286) -> one TP at tau .5, F1 = 2/(2+1+1) = .5.
    # Hungarian (max total IoU): p0-g1 + p1-g0 = 1.371 > 1.119 -> IoUs .571 and .8:
    #   tau .50,.55: TP=2 -> F1=1; tau .60..0.80 (5 taus): TP=1, FP=1, FN=1 -> F1=.5; tau .85..0.95: F1=0.
    #   pmF1 = (2*1 + 5*.5 + 3*0)/10 = .45.  Only a positive pair -> IL MCC denominator 0 -> 0.
    gold = [gt("a", band(0, 10), band(4, 14))]
    m = saco_metrics(gold, [pred("a", (band(0, 12), 0.9), (band(0, 8), 0.8))])
    assert m.f1_at[0.5] == 1.0 and m.f1_at[0.55] == 1.0
    assert [m.f1_at[t] for t in TAUS[2:7]] == [0.5] * 5
    assert m.pmF1 == pytest.approx(0.45)
    assert m.counts["tp@0.50"] == 2 and m.IL_MCC == 0.0


def test_scores_below_half_are_ignored():
    # Pair a: exact mask at score 0.5 (counts: >= 0.5) and a junk mask at 0.49 (ignored) -> F1=1 everywhere.
    # Pair b (negative): a mask at 0.3 is ignored -> true negative. MCC=1, pmF1=1 -> cgF1=100.
    gold = [gt("a", band(10, 30)), gt("b")]
    preds = [pred("a", (band(10, 30), 0.5), (band(60, 90), 0.49)), pred("b", (band(0, 50), 0.3))]
    m = saco_metrics(gold, preds)
    assert m.cgF1 == pytest.approx(100.0)
    assert m.counts["fp@0.50"] == 0 and m.counts["il_fp"] == 0


def test_negative_only_confusions():
    # Two negative pairs, one with a confident prediction: IL TP=0, FP=1, FN=0, TN=1.
    # MCC denominator sqrt((0+1)(0+0)(1+1)(1+0)) = 0 -> 0; no positive pair -> pmF1 = 0; cgF1 = 0.
    gold = [gt("a"), gt("b")]
    m = saco_metrics(gold, [pred("a", (band(0, 5), 0.9))])
    assert (m.counts["il_tp"], m.counts["il_fp"], m.counts["il_fn"], m.counts["il_tn"]) == (0, 1, 0, 1)
    assert m.IL_MCC == 0.0 and m.pmF1 == 0.0 and m.cgF1 == 0.0


def test_mcc_by_hand():
    # (TP,FP,FN,TN) = (2,1,0,1): (2*1 - 1*0) / sqrt(3*2*2*1) = 2/sqrt(12) = 0.57735
    assert mcc(2, 1, 0, 1) == pytest.approx(2 / math.sqrt(12))
    # One of each: (1 - 1)/4 = 0; perfectly wrong: (0 - 1)/1 = -1
    assert mcc(1, 1, 1, 1) == 0.0
    assert mcc(0, 1, 1, 0) == -1.0


def test_mixed_case_end_to_end():
    # a: GT 1, pred exact                 -> TP, IL tp
    # b: GT 2, pred one of them           -> TP 1, FN 1 at every tau, IL tp
    # c: negative, pred a mask (.8)       -> IL fp (and no effect on pmF1)
    # d: GT 1, no prediction              -> FN 1, IL fn
    # e: negative, nothing                -> IL tn
    # pmF1: TP=2, FP=0, FN=2 at every tau -> F1 = 4/(4+0+2) = 2/3.
    # IL: tp=2, fp=1, fn=1, tn=1 -> (2*1 - 1*1)/sqrt(3*3*2*2) = 1/6.  cgF1 = 100 * 2/3 * 1/6 = 11.11
    gold = [gt("a", band(0, 10)), gt("b", band(0, 10), band(20, 30)), gt("c"), gt("d", band(5, 9)), gt("e")]
    preds = [pred("a", (band(0, 10), 0.9)), pred("b", (band(20, 30), 0.7)), pred("c", (band(0, 3), 0.8))]
    m = saco_metrics(gold, preds)
    assert m.pmF1 == pytest.approx(2 / 3)
    assert m.IL_MCC == pytest.approx(1 / 6)
    assert m.cgF1 == pytest.approx(100 * 2 / 3 / 6)


def test_by_concept_and_validation():
    gold = [
        gt("a", band(0, 10), concept="square"),
        gt("b", concept="square"),
        gt("c", band(0, 5), concept="star"),
    ]
    per = saco_metrics_by_concept(gold, [pred("a", (band(0, 10), 0.9)), pred("c", (band(50, 60), 0.9))])
    assert per["square"].cgF1 == pytest.approx(100.0)  # a exact, b empty: pmF1 1, MCC 1
    assert per["star"].pmF1 == 0.0 and per["star"].counts["pairs"] == 1
    with pytest.raises(ValueError, match="twice"):
        saco_metrics([gt("a"), gt("a")], [])
    with pytest.raises(ValueError, match="gold is"):
        saco_metrics([gt("a")], [PairPred("a", 3, 3, [], [])])
    assert saco_metrics([gt("a")], [pred("zz", (band(0, 3), 0.9))]).counts["ignored_pred_pairs"] == 1
