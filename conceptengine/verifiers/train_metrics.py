"""How well a verifier agrees with the humans on held-out images, in the terms routing cares about.

- accuracy: the verifier's argmax equals the human's choice;
- per choice: how often the humans chose it (support), how often the verifier did, precision and recall
  (agreement with humans per choice), and the full confusion (human -> verifier counts);
- ECE of P(Accept) against "the human accepted": routing thresholds P(Accept), so this is the probability
  that must be calibrated (10 equal-width bins, the usual definition);
- AUROC of P(Accept) and the share of items with P(Accept) >= 0.9 or <= 0.1 ("decided" at the default
  routing thresholds) with the accuracy on them, and the largest shares one threshold could auto-accept /
  auto-reject at 95% agreement with the humans: separable, confident scores are what let the engine
  auto-decide items instead of sending them to people.
"""

from __future__ import annotations

import numpy as np
from rich import box
from rich.table import Table
from scipy.stats import rankdata

from conceptengine.verifiers.choices import ACCEPT, ChoiceSet

ECE_BINS = 10
CONFIDENT_HIGH, CONFIDENT_LOW = 0.9, 0.1
TARGET_PRECISION = 0.95  # routing's default target_precision


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float | None:
    """Sum over equal-width bins of |bin share| * |mean predicted - observed frequency|; None without items."""
    if len(p) == 0:
        return None
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(float(p[sel].mean()) - float(y[sel].mean()))
    return float(ece)


def auroc(p: np.ndarray, y: np.ndarray) -> float | None:
    """Probability that a random accepted item scores above a random rejected one (ties count half)."""
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    ranks = rankdata(np.concatenate([pos, neg]))  # ties get their average rank
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def share_decidable(p: np.ndarray, y: np.ndarray, accept: bool, target: float = TARGET_PRECISION) -> float:
    """Largest share of items one threshold on P(Accept) could decide (accept above / reject below it)
    while agreeing with the humans on >= `target` of them: what calibrated routing can hope to automate."""
    if len(p) == 0:
        return 0.0
    order = np.argsort(-p if accept else p, kind="stable")
    agree = (y[order] == 1) if accept else (y[order] == 0)
    precision = np.cumsum(agree) / np.arange(1, len(p) + 1)
    ok = np.nonzero(precision >= target)[0]
    return float((ok[-1] + 1) / len(p)) if len(ok) else 0.0


def agreement_metrics(probs: np.ndarray, human: list[str], choices: ChoiceSet) -> dict:
    """All hold-out numbers for one task; `probs` is (N, len(choices)) in the choices' column order."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(human), len(choices)):
        raise ValueError(
            f"probs shape {probs.shape} does not match {len(human)} answers x {len(choices)} choices"
        )
    n = len(human)
    predicted = [choices.names[i] for i in probs.argmax(axis=1)] if n else []
    y_idx = np.array([choices.index(h) for h in human], dtype=int)
    nll = float(-np.log(np.clip(probs[np.arange(n), y_idx], 1e-12, 1)).mean()) if n else None
    per_choice, confusion = {}, {}
    for name in choices.names:
        support = sum(h == name for h in human)
        chosen = sum(p == name for p in predicted)
        hit = sum(h == name and p == name for h, p in zip(human, predicted))
        if support or chosen:
            per_choice[name] = {
                "support": support,
                "predicted": chosen,
                "precision": hit / chosen if chosen else None,
                "recall": hit / support if support else None,
            }
        row = {p: sum(h == name and q == p for h, q in zip(human, predicted)) for p in choices.names}
        if support:
            confusion[name] = {k: v for k, v in row.items() if v}
    p_acc = probs[:, choices.index(ACCEPT)] if n else np.zeros(0)
    y_acc = np.array([h == ACCEPT for h in human], dtype=float)
    decided = (p_acc >= CONFIDENT_HIGH) | (p_acc <= CONFIDENT_LOW)
    right = (p_acc >= 0.5) == (y_acc == 1)
    return {
        "n": n,
        "accuracy": float(np.mean([h == p for h, p in zip(human, predicted)])) if n else None,
        "nll": nll,
        "per_choice": per_choice,
        "confusion": confusion,
        "ece_p_accept": expected_calibration_error(p_acc, y_acc),
        "auroc_p_accept": auroc(p_acc, y_acc),
        "decided_share": float(decided.mean()) if n else None,
        "decided_accuracy": float(right[decided].mean()) if decided.any() else None,
        "human_accept_share": float(y_acc.mean()) if n else None,
        "accept_share_at_95": share_decidable(p_acc, y_acc, accept=True),
        "reject_share_at_95": share_decidable(p_acc, y_acc, accept=False),
    }


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def metrics_table(task: str, m: dict) -> Table:
    """One row per choice, then the task-level numbers in the caption."""
    table = Table(
        title=f"{task.upper()} verifier on the hold-out split ({m['n']} items)", box=box.SIMPLE_HEAD
    )
    for col in ("human choice", "support", "predicted", "precision", "recall"):
        table.add_column(col, justify="left" if col == "human choice" else "right")
    for name, c in m["per_choice"].items():
        table.add_row(name, str(c["support"]), str(c["predicted"]), _f(c["precision"]), _f(c["recall"]))
    table.caption = (
        f"accuracy {_f(m['accuracy'])}  ECE(P(Accept)) {_f(m['ece_p_accept'])}  "
        f"AUROC {_f(m['auroc_p_accept'])}  "
        f"decided (P>={CONFIDENT_HIGH} or <={CONFIDENT_LOW}) {_f(m['decided_share'])} at accuracy "
        f"{_f(m['decided_accuracy'])}; at 95% agreement one threshold could auto-accept "
        f"{_f(m['accept_share_at_95'])} / auto-reject {_f(m['reject_share_at_95'])} of the items"
    )
    return table
