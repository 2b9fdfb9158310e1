"""Calibrated routing thresholds: auto-decide only where human-verified data proves the decision is right.

For one task type (MV: masks, EV: pairs) we have calibration items: the verifier's P(Accept) and the
human's verdict (accepted or not). We look for

- an auto-ACCEPT threshold t: items with P(Accept) >= t are human-accepted with precision >= target,
- an auto-REJECT threshold t: items with P(Accept) <= t are human-rejected with precision >= target,

each with confidence 1 - delta. The precision of a region is certified by the one-sided Clopper-Pearson
lower bound of k successes in n items (exact for binomial data; never below the nominal level).

Scanning many thresholds and keeping the best-looking one is multiple testing. We use fixed-sequence
testing over a grid fixed in advance (Learn-then-Test): start at the most conservative threshold, move
toward looser ones, and stop at the first whose bound fails. Every threshold passed before the stop is
certified at once with family-wise error <= delta, with no correction, because a false "pass" on the
first wrong hypothesis is needed before any later one can be reached. Thresholds whose region holds
fewer than `min_items` calibration items are not tested (skipped, not failed): with a handful of items
no bound can pass, and skipping depends on the scores alone, never on the human labels.

Pure numpy/scipy: no engine types, so it can be what-if'd on any stored verdicts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import beta

ACCEPT_SIDE, REJECT_SIDE = "accept", "reject"
SIDES = (ACCEPT_SIDE, REJECT_SIDE)
DEFAULT_STEP = 0.01


@dataclass(frozen=True)
class Bound:
    """One side's threshold and its evidence. `threshold` None means: no automatic decision on this side.

    With a threshold, n/k/precision/bound describe its region (n calibration items there, k of them
    decided by the human the way the automatic decision would). Without one, they describe the test
    that stopped the sequence (all zero/None when no threshold had `min_items` items to test).
    """

    side: str
    threshold: float | None
    n: int
    k: int
    precision: float | None
    bound: float | None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Thresholds:
    """The calibrated thresholds of one task type, with the settings they were certified under."""

    accept: Bound
    reject: Bound
    n_items: int
    target: float
    confidence: float


def cp_lower(k: int | np.ndarray, n: int | np.ndarray, delta: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound on a binomial rate at confidence 1 - delta (0 when k == 0)."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("cp_lower: need 0 <= k <= n")
    with np.errstate(invalid="ignore"):
        lower = beta.ppf(delta, k, n - k + 1)
    return np.where(k > 0, lower, 0.0)


def grid(step: float = DEFAULT_STEP) -> np.ndarray:
    """Candidate thresholds, fixed before any data is seen: 0, step, ..., 1, plus points close to 0 and 1.

    The extra tail points (1e-3 ... 1e-6 from either end) matter because verifier softmax scores
    saturate: a good verifier may put most items above 0.99, where a linear grid cannot tell them apart.
    """
    if not 0 < step <= 0.5:
        raise ValueError(f"grid step must be in (0, 0.5], got {step}")
    linear = np.linspace(0.0, 1.0, round(1.0 / step) + 1)
    tails = 10.0 ** -np.arange(3, 7)
    points = np.unique(np.round(np.concatenate([linear, tails, 1.0 - tails]), 7))
    return np.unique(points.astype(np.float32))


def region_counts(
    p_accept: np.ndarray, human_accepts: np.ndarray, thresholds: np.ndarray, side: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per threshold: n items in the side's region and k of them the human agreed with.

    Accept region: P(Accept) >= t, agreement = human accepted. Reject region: P(Accept) <= t,
    agreement = human did not accept. Compared in float32, exactly as routing compares.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    p = np.asarray(p_accept, dtype=np.float32)
    y = np.asarray(human_accepts, dtype=bool)
    t = np.asarray(thresholds, dtype=np.float32)
    order = np.argsort(p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    accepted_upto = np.concatenate([[0], np.cumsum(y_sorted)])  # accepted among the i lowest scores
    if side == ACCEPT_SIDE:
        first = np.searchsorted(p_sorted, t, side="left")  # items [first:] have p >= t
        n = len(p) - first
        k = accepted_upto[-1] - accepted_upto[first]
    else:
        end = np.searchsorted(p_sorted, t, side="right")  # items [:end] have p <= t
        n = end
        k = end - accepted_upto[end]
    return n.astype(int), k.astype(int)


def _check_data(p_accept: np.ndarray, human_accepts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p_accept, dtype=np.float64).ravel()
    y = np.asarray(human_accepts).ravel()
    if p.shape != y.shape:
        raise ValueError(f"p_accept has {p.size} items but human_accepts has {y.size}; they must pair up")
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1):
        raise ValueError("p_accept: every value must be a probability in [0, 1]")
    if y.size and y.dtype != bool:
        raise ValueError(f"human_accepts: must be booleans (True = the human accepted), got {y.dtype}")
    return p, y.astype(bool)


def _check_settings(target: float, delta: float, min_items: int) -> None:
    if not 0 < target < 1:
        raise ValueError(f"target precision must be in (0, 1), got {target}")
    if not 0 < delta < 1:
        raise ValueError(f"delta (1 - confidence) must be in (0, 1), got {delta}")
    if min_items < 1:
        raise ValueError(f"min_items must be >= 1, got {min_items}")


def _fixed_sequence(
    n: np.ndarray, k: np.ndarray, target: float, delta: float, min_items: int
) -> tuple[list[int], int | None]:
    """Indices (in testing order) that passed, and the index whose test stopped the sequence."""
    bounds = cp_lower(k, n, delta)  # all at once: one vectorized Beta quantile call
    passed: list[int] = []
    for i in range(len(n)):
        if n[i] < min_items:
            continue  # too few items to test: skipped (decided by the scores alone)
        if bounds[i] >= target:
            passed.append(i)
        else:
            return passed, i
    return passed, None


def _bound(
    side: str, thresholds: np.ndarray, n: np.ndarray, k: np.ndarray, i: int | None, delta: float, chosen: bool
) -> Bound:
    if i is None:
        return Bound(side, None, 0, 0, None, None)
    return Bound(
        side=side,
        threshold=round(float(thresholds[i]), 7) if chosen else None,  # the grid value, not its float32
        n=int(n[i]),
        k=int(k[i]),
        precision=round(float(k[i] / n[i]), 6) if n[i] else None,
        bound=round(float(cp_lower(k[i], n[i], delta)), 6),
    )


def calibrate(
    p_accept: np.ndarray,
    human_accepts: np.ndarray,
    target: float = 0.95,
    delta: float = 0.05,
    min_items: int = 100,
    step: float = DEFAULT_STEP,
) -> Thresholds:
    """Auto-accept and auto-reject thresholds certified at precision >= target with confidence 1 - delta.

    Each side is certified separately at 1 - delta. The two regions never overlap: every threshold
    passed before the stop is certified, so when the loosest reject threshold would reach the accept
    threshold we keep the loosest passed one still below it.
    """
    p, y = _check_data(p_accept, human_accepts)
    _check_settings(target, delta, min_items)
    ts = grid(step)
    down, up = ts[::-1], ts  # accept: from 1 (fewest items) down; reject: from 0 up
    n_a, k_a = region_counts(p, y, down, ACCEPT_SIDE)
    n_r, k_r = region_counts(p, y, up, REJECT_SIDE)
    pass_a, stop_a = _fixed_sequence(n_a, k_a, target, delta, min_items)
    pass_r, stop_r = _fixed_sequence(n_r, k_r, target, delta, min_items)
    accept = _bound(ACCEPT_SIDE, down, n_a, k_a, pass_a[-1], delta, True) if pass_a else None
    if accept is not None:
        pass_r = [i for i in pass_r if up[i] < accept.threshold]
    reject = _bound(REJECT_SIDE, up, n_r, k_r, pass_r[-1], delta, True) if pass_r else None
    return Thresholds(
        accept=accept or _bound(ACCEPT_SIDE, down, n_a, k_a, stop_a, delta, False),
        reject=reject or _bound(REJECT_SIDE, up, n_r, k_r, stop_r, delta, False),
        n_items=int(p.size),
        target=target,
        confidence=1 - delta,
    )


def assess(
    p_accept: np.ndarray, human_accepts: np.ndarray, threshold: float | None, side: str, delta: float = 0.05
) -> Bound:
    """The evidence for a threshold someone fixed by hand (routing.mode: fixed): n, k, precision, bound."""
    p, y = _check_data(p_accept, human_accepts)
    if not 0 < delta < 1:
        raise ValueError(f"delta (1 - confidence) must be in (0, 1), got {delta}")
    if threshold is None:
        return Bound(side, None, 0, 0, None, None)
    t = np.array([threshold], dtype=np.float32)
    n, k = region_counts(p, y, t, side)
    return Bound(
        side=side,
        threshold=float(threshold),
        n=int(n[0]),
        k=int(k[0]),
        precision=round(float(k[0] / n[0]), 6) if n[0] else None,
        bound=round(float(cp_lower(k[0], n[0], delta)), 6) if n[0] else None,
    )
