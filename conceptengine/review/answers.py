"""Task kinds, their answer choices and the checks on what the engine enqueues and reviewers submit.

The choices are the SAM 3 paper's MV and EV answer sets; correction has a single "Done" whose
payload carries the edits. Every check names the offending field, because a reviewer (or a web form)
that sends a bad answer must learn exactly what to fix, and a bad answer must never reach the dataset.
"""

from __future__ import annotations

from typing import Any

from conceptengine.engine import rle
from conceptengine.verifiers.choices import EV, MV

# One definition of the paper's answer sets, shared with the AI verifiers that answer the same questions.
MV_CHOICES: tuple[str, ...] = MV.names
EV_CHOICES: tuple[str, ...] = EV.names
CORRECTION_CHOICES: tuple[str, ...] = ("Done",)

CHOICES: dict[str, tuple[str, ...]] = {"mv": MV_CHOICES, "ev": EV_CHOICES, "correction": CORRECTION_CHOICES}
KINDS: tuple[str, ...] = tuple(CHOICES)

_PAIR_KEYS = ("media_id", "uri", "height", "width", "noun_phrase")
TASK_PAYLOAD_KEYS: dict[str, tuple[str, ...]] = {
    "mv": _PAIR_KEYS + ("instance_id", "rle", "box_xyxy"),
    "ev": _PAIR_KEYS + ("rles",),
    "correction": _PAIR_KEYS + ("rles",),
}


class SubmissionError(ValueError):
    """A malformed submission or task; the message names the field to fix."""


class LeaseLost(SubmissionError):
    """An answer from a reviewer whose lease ran out and whose task is now leased to someone else."""


class LeaseSpanOver(LeaseLost):
    """A renewal past the longest a task may stay leased to one reviewer (review.max_lease_span_s)."""


def check_kind(kind: str, field: str = "kind") -> None:
    if kind not in CHOICES:
        raise SubmissionError(f"{field}: unknown task kind {kind!r}; expected one of {list(KINDS)}")


def check_task_payload(kind: str, payload: Any) -> None:
    """What the engine enqueues must carry everything a reviewer needs to answer without the run store."""
    check_kind(kind)
    if not isinstance(payload, dict):
        raise SubmissionError(
            f"payload: must be a JSON object for a {kind} task, got {type(payload).__name__}"
        )
    missing = [k for k in TASK_PAYLOAD_KEYS[kind] if k not in payload]
    if missing:
        raise SubmissionError(f"payload.{missing[0]}: missing from {kind} task payload (needs {missing})")
    for key in ("height", "width"):
        if not isinstance(payload[key], int) or isinstance(payload[key], bool) or payload[key] <= 0:
            raise SubmissionError(f"payload.{key}: must be a positive integer, got {payload[key]!r}")
    if kind != "mv" and not isinstance(payload["rles"], list):
        raise SubmissionError(
            f"payload.rles: must be a list of RLE strings, got {type(payload['rles']).__name__}"
        )


def check_answer(kind: str, task_payload: dict[str, Any], choice: Any, payload: Any) -> None:
    """Validate a reviewer's answer against the task kind; correction edits must also fit the image."""
    if not isinstance(choice, str) or choice not in CHOICES[kind]:
        raise SubmissionError(
            f"choice: {choice!r} is not a valid {kind} answer; expected one of {list(CHOICES[kind])}"
        )
    if payload is not None and not isinstance(payload, dict):
        raise SubmissionError(f"payload: must be a JSON object or null, got {type(payload).__name__}")
    if kind != "correction" and payload is not None:
        raise SubmissionError(f"payload: a {kind} answer carries none (null); its choice is the answer")
    if kind == "correction":
        _check_correction(task_payload, payload)


def _check_correction(task: dict[str, Any], payload: dict[str, Any] | None) -> None:
    if payload is None:
        raise SubmissionError(
            'payload: a correction needs {"add": [rle...], "remove": [instance_id or index...]}'
        )
    unknown = sorted(set(payload) - {"add", "remove"})
    if unknown:
        raise SubmissionError(
            f"payload.{unknown[0]}: unknown correction field; only 'add' and 'remove' exist"
        )
    add, remove = payload.get("add", []), payload.get("remove", [])
    if not isinstance(add, list):
        raise SubmissionError(f"payload.add: must be a list of RLE strings, got {type(add).__name__}")
    if not isinstance(remove, list):
        raise SubmissionError(
            f"payload.remove: must be a list of instance ids or indices, got {type(remove).__name__}"
        )
    h, w = int(task["height"]), int(task["width"])
    for i, counts in enumerate(add):
        if not isinstance(counts, str):
            raise SubmissionError(
                f"payload.add[{i}]: must be an RLE counts string, got {type(counts).__name__}"
            )
        try:
            rle.decode(counts, h, w)
        except (ValueError, UnicodeEncodeError) as exc:
            raise SubmissionError(f"payload.add[{i}]: not a valid RLE for a {h}x{w} image ({exc})") from exc
    n_given = len(task.get("rles", []))
    ids = task.get("instance_ids") or []
    for i, item in enumerate(remove):
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise SubmissionError(
                f"payload.remove[{i}]: must be an instance id or a mask index, got {item!r}"
            )
        if isinstance(item, int) and not 0 <= item < n_given:
            raise SubmissionError(
                f"payload.remove[{i}]: index {item} out of range; the task has {n_given} masks"
            )
        if isinstance(item, str) and ids and item not in ids:
            raise SubmissionError(f"payload.remove[{i}]: {item!r} is not one of the task's instance ids")
