"""Consensus review: k reviewers per MV / EV item, agreement statistics, and adjudication by an admin.

Why: one reviewer's error rate caps the precision the engine can certify (README, "Routing with a
guarantee"). Asking k independent reviewers and sending every disagreement to an admin trades human
seconds for label quality, and the agreement statistics say whether that trade is worth it: a kind
whose reviewers almost always agree gains little from k > 1.

Rules (the queue enforces who may answer what; this module decides what the answers mean):
- an item is *complete* when all k replicas are answered; a complete item whose k choices are all
  equal is *unanimous* and that choice is final;
- a complete item with any disagreement gets one `adjudicate` task (admins only), whose answer is final;
- an incomplete item, or a disputed one not yet adjudicated, has no final answer (the round treats it
  like an unanswered task).
Pure functions over queue values, so the dashboard and the benchmarks can compute the same figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from conceptengine.review.answers import CHOICES, SubmissionError, check_answer
from conceptengine.review.types import AnswerRow, Item

ADJUDICATE = "adjudicate"
#: Task kinds that may be asked k > 1 times; correction edits are not votes and cannot be compared.
CONSENSUS_KINDS: tuple[str, ...] = ("mv", "ev")


def check_replicas(replicas: Any, kinds: Iterable[str]) -> int:
    """k must be a positive integer, and k > 1 only for kinds whose answers are comparable votes."""
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"replicas: must be a positive integer (reviewers per item), got {replicas!r}")
    if replicas > 1:
        bad = sorted(set(kinds) - set(CONSENSUS_KINDS))
        if bad:
            raise ValueError(
                f"replicas: consensus (k={replicas}) applies to {list(CONSENSUS_KINDS)} tasks only, "
                f"not {bad}; enqueue those with replicas=1"
            )
    return replicas


def choices_for(kind: str, payload: dict[str, Any]) -> tuple[str, ...]:
    """The answer choices a task offers; an adjudication offers those of the question it settles."""
    if kind == ADJUDICATE:
        return CHOICES[payload["of_kind"]]
    return CHOICES[kind]


def adjudication_payload(
    kind: str, subject_id: str, item_id: str, task_payload: dict[str, Any], answers: Sequence[AnswerRow]
) -> dict[str, Any]:
    """What an admin needs to settle a dispute: the original question and every reviewer's answer."""
    return {
        "of_kind": kind,
        "subject_id": subject_id,
        "item_id": item_id,
        "task": task_payload,
        "answers": [{"annotator": a.annotator, "choice": a.choice} for a in answers],
    }


def check_adjudication(task_payload: dict[str, Any], choice: Any, payload: Any) -> None:
    """An admin's ruling is one of the original question's choices, validated like the original answer."""
    check_answer(task_payload["of_kind"], task_payload["task"], choice, payload)
    if payload is not None:
        raise SubmissionError("payload: an adjudication carries only a choice; send payload null")


def is_complete(item: Item) -> bool:
    return len(item.answers) >= item.replicas


def is_unanimous(item: Item) -> bool:
    return is_complete(item) and len({a.choice for a in item.answers}) == 1


def final_answer(item: Item) -> AnswerRow | None:
    """The answer the round uses: the unanimous one, else the admin's ruling, else none yet."""
    if not is_complete(item):
        return None
    if is_unanimous(item):
        return item.answers[0]
    return item.adjudication


def agreement(items: Sequence[Item], kind: str) -> dict[str, Any]:
    """Agreement among the k reviewers of the complete items of one kind.

    - `unanimous`: share of complete items whose k answers are all equal (what skips adjudication);
    - `pairwise_agreement`: mean over items of the share of reviewer pairs that chose alike;
    - `fleiss_kappa`: that agreement corrected for chance (Fleiss 1971) over the kind's choices; None
      when chance agreement is 1 (every answer the same choice), where kappa is undefined.
    Items asked once carry no agreement information and are left out.
    """
    complete = [it for it in items if it.replicas > 1 and is_complete(it)]
    out: dict[str, Any] = {
        "items": len(complete),
        "unanimous": None,
        "pairwise_agreement": None,
        "fleiss_kappa": None,
        "adjudicated": sum(it.adjudication is not None for it in complete),
        "awaiting_adjudication": sum(not is_unanimous(it) and it.adjudication is None for it in complete),
    }
    if not complete:
        return out
    categories = CHOICES[kind]
    totals: Counter[str] = Counter()
    per_item_agreement = []
    for it in complete:
        votes = Counter(a.choice for a in it.answers[: it.replicas])
        n = it.replicas
        totals.update(votes)
        per_item_agreement.append((sum(c * c for c in votes.values()) - n) / (n * (n - 1)))
    n_ratings = sum(totals.values())
    p_bar = sum(per_item_agreement) / len(per_item_agreement)
    p_e = sum((totals[c] / n_ratings) ** 2 for c in categories)
    out["unanimous"] = sum(is_unanimous(it) for it in complete) / len(complete)
    out["pairwise_agreement"] = p_bar
    out["fleiss_kappa"] = None if p_e >= 1.0 else (p_bar - p_e) / (1.0 - p_e)
    return out
