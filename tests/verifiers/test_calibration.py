"""Calibrated thresholds: the Clopper-Pearson bound, fixed-sequence testing, and the guarantee itself."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import beta, binomtest

from conceptengine.verifiers.calibration import assess, calibrate, cp_lower, grid, region_counts


def test_cp_lower_is_the_exact_binomial_bound() -> None:
    assert cp_lower(95, 100, 0.05) == pytest.approx(beta.ppf(0.05, 95, 6))
    # All n accepted: the bound solves p**n = delta, i.e. delta ** (1 / n); 59 items just clear 95%.
    assert cp_lower(59, 59, 0.05) == pytest.approx(0.05 ** (1 / 59)) and cp_lower(59, 59, 0.05) > 0.95
    assert cp_lower(58, 58, 0.05) < 0.95
    assert cp_lower(0, 10, 0.05) == 0.0
    # The bound is the rate at which the exact one-sided binomial test's p-value is exactly delta.
    lb = float(cp_lower(180, 200, 0.1))
    assert binomtest(180, 200, lb, alternative="greater").pvalue == pytest.approx(0.1, rel=1e-6)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        cp_lower(5, 4, 0.05)


def test_region_counts_compare_in_float32_like_routing() -> None:
    p = np.array([0.1, 0.2, 0.5, 0.5, 0.9], dtype=np.float32)
    y = np.array([False, False, True, False, True])
    n, k = region_counts(p, y, np.array([0.5, 0.2]), "accept")
    assert n.tolist() == [3, 4] and k.tolist() == [2, 2]  # p >= 0.5: three items, two accepted
    n, k = region_counts(p, y, np.array([0.2, 0.5]), "reject")
    assert n.tolist() == [2, 4] and k.tolist() == [2, 3]  # p <= 0.2 holds the stored float32 0.2


def test_grid_is_fixed_and_reaches_saturated_scores() -> None:
    g = grid(0.01)
    assert g[0] == 0 and g[-1] == 1 and np.all(np.diff(g) > 0)
    assert np.float32(0.999999) in g and np.float32(0.37) in g


def _block(p: float, accepted: int, rejected: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(accepted + rejected, p), np.array([True] * accepted + [False] * rejected)


def _data(*blocks: tuple[float, int, int]) -> tuple[np.ndarray, np.ndarray]:
    parts = [_block(*b) for b in blocks]
    return np.concatenate([p for p, _ in parts]), np.concatenate([y for _, y in parts])


def test_hand_checkable_thresholds() -> None:
    # 100 sure accepts at 0.99, 100 coin flips at 0.5, 100 sure rejects at 0.01.
    p, y = _data((0.99, 100, 0), (0.5, 50, 50), (0.01, 0, 100))
    th = calibrate(p, y, target=0.95, delta=0.05, min_items=50)
    # Accept: every grid value from 0.99 down to 0.51 holds exactly the 100 sure accepts (bound
    # 0.05 ** (1/100) = 0.9705 passes); 0.50 adds the coin flips (150/200) and stops the sequence.
    assert th.accept.threshold == 0.51
    assert (th.accept.n, th.accept.k, th.accept.precision) == (100, 100, 1.0)
    assert th.accept.bound == pytest.approx(0.05 ** (1 / 100), abs=1e-6)
    assert th.reject.threshold == 0.49 and (th.reject.n, th.reject.k) == (100, 100)
    assert th.n_items == 300 and th.target == 0.95 and th.confidence == pytest.approx(0.95)


def test_fixed_sequence_stops_at_the_first_failure() -> None:
    # The region at 0.9 fails (100/160); the much larger one at 0.8 would pass (5100/5160) on its own,
    # but fixed-sequence testing never gets there: picking it would be scanning for the best-looking one.
    p, y = _data((0.99, 100, 0), (0.9, 0, 60), (0.8, 5000, 0))
    th = calibrate(p, y, min_items=50)
    assert th.accept.threshold == 0.91 and th.accept.n == 100


def test_too_little_data_decides_nothing() -> None:
    p, y = _data((0.99, 30, 0), (0.01, 0, 15))  # 45 items in all, below min_items
    th = calibrate(p, y, min_items=50)
    assert th.accept.threshold is None and th.reject.threshold is None
    assert th.accept.n == 0 and th.accept.bound is None  # nothing had enough items to be tested
    # With enough items but a failing bound, the evidence of the failed test is kept.
    p, y = _data((0.99, 90, 10))
    th = calibrate(p, y, min_items=50)
    assert th.accept.threshold is None and (th.accept.n, th.accept.k) == (100, 90)
    assert th.accept.bound == pytest.approx(beta.ppf(0.05, 90, 11), abs=1e-6)


def test_accept_and_reject_regions_never_overlap() -> None:
    # Both sides pass across the empty gap between 0.3 and 0.7, so the loosest reject (0.69) would
    # overlap the loosest accept (0.31); reject keeps its loosest certified value below 0.31.
    p, y = _data((0.7, 100, 0), (0.3, 0, 100))
    th = calibrate(p, y, min_items=50)
    assert th.accept.threshold == 0.31
    assert th.reject.threshold == 0.3


@pytest.mark.parametrize(
    ("p", "y", "kwargs", "message"),
    [
        ([0.5, 0.6], [True], {}, "2 items but human_accepts has 1"),
        ([0.5, 1.5], [True, False], {}, "probability in \\[0, 1\\]"),
        ([0.5, np.nan], [True, False], {}, "probability in \\[0, 1\\]"),
        ([0.5], [1], {}, "must be booleans"),
        ([0.5], [True], {"target": 1.0}, "target precision"),
        ([0.5], [True], {"delta": 0.0}, "delta"),
        ([0.5], [True], {"min_items": 0}, "min_items"),
    ],
)
def test_bad_input_is_named(p: list, y: list, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calibrate(np.array(p), np.array(y), **kwargs)


def test_assess_reports_the_evidence_for_a_fixed_threshold() -> None:
    p, y = _data((0.95, 95, 5), (0.5, 10, 10))
    b = assess(p, y, 0.9, "accept", delta=0.05)
    assert (b.threshold, b.n, b.k, b.precision) == (0.9, 100, 95, 0.95)
    assert b.bound == pytest.approx(beta.ppf(0.05, 95, 6), abs=1e-6)
    assert assess(p, y, None, "reject").threshold is None


# -- the guarantee, on synthetic data from a known calibration curve -------------------------------
# Scores come from a mixture of Beta(8, 1) and Beta(1, 8) (a decent verifier: most scores near 0 or
# 1); the true P(human accepts | score s) is `curve(s)`. The true precision of any region follows by
# integration, so each trial's realised precision is exact, not estimated.


def _density(s: float) -> float:
    return 0.5 * (beta.pdf(s, 8, 1) + beta.pdf(s, 1, 8))


def _true_precision(curve, t: float, side: str) -> float:
    if side == "accept":
        num, den = quad(lambda s: curve(s) * _density(s), t, 1)[0], quad(_density, t, 1)[0]
    else:
        num, den = quad(lambda s: (1 - curve(s)) * _density(s), 0, t)[0], quad(_density, 0, t)[0]
    return num / den


def _sample(rng: np.random.Generator, n: int, curve) -> tuple[np.ndarray, np.ndarray]:
    high = rng.random(n) < 0.5
    s = np.where(high, rng.beta(8, 1, n), rng.beta(1, 8, n))
    return s, rng.random(n) < curve(s)


def _naive(p: np.ndarray, y: np.ndarray, target: float) -> float | None:
    """The tempting shortcut: the loosest threshold whose *empirical* precision meets the target."""
    n, k = region_counts(p, y, grid()[::-1], "accept")
    ok = [t for t, ni, ki in zip(grid()[::-1], n, k, strict=True) if ni >= 50 and ki / ni >= target]
    return round(float(min(ok)), 7) if ok else None


@pytest.mark.parametrize(
    "curve",
    [lambda s: s, lambda s: s**3],  # calibrated, and overconfident (scores promise more than they hold)
    ids=["calibrated", "overconfident"],
)
def test_realised_precision_meets_the_target_in_at_least_1_minus_delta_of_trials(curve) -> None:
    rng = np.random.default_rng(7)
    target, delta, trials = 0.9, 0.1, 400
    # Thresholds only ever come from the grid: integrate each grid value's true precision once.
    truth = {
        side: {round(float(t), 7): _true_precision(curve, float(t), side) for t in grid()[1:-1]}
        for side in ("accept", "reject")
    }
    held = {"accept": 0, "reject": 0}
    found = {"accept": 0, "reject": 0}
    naive_held = naive_found = 0
    for _ in range(trials):
        p, y = _sample(rng, 3000, curve)
        th = calibrate(p, y, target=target, delta=delta, min_items=50)
        for side, b in (("accept", th.accept), ("reject", th.reject)):
            if b.threshold is None:
                held[side] += 1  # deciding nothing automatically cannot break the promise
                continue
            found[side] += 1
            held[side] += truth[side][b.threshold] >= target
        t = _naive(p, y, target)
        if t is not None:
            naive_found += 1
            naive_held += truth["accept"][t] >= target
    for side in ("accept", "reject"):
        assert held[side] >= (1 - delta) * trials, (side, held[side])
        assert found[side] >= 0.9 * trials  # not vacuous: thresholds are found in nearly every trial
    # The same data, without the bound, breaks the promise far more often than delta allows.
    assert naive_found - naive_held > 2 * delta * naive_found
