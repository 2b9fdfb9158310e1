"""Shared builders for the review tests: small valid task payloads and a clock tests can move."""

from __future__ import annotations

import numpy as np

from conceptengine.engine import rle
from conceptengine.review.queue import TaskSpec

H, W = 16, 16


def square(x0: int, y0: int, size: int = 4) -> str:
    m = np.zeros((H, W), dtype=bool)
    m[y0 : y0 + size, x0 : x0 + size] = True
    return rle.encode(m)


def ev_spec(i: int, round_index: int = 1, kind: str = "ev", rles: list[str] | None = None) -> TaskSpec:
    payload = {
        "media_id": f"m{i}",
        "uri": f"mem://m{i}.png",
        "height": H,
        "width": W,
        "noun_phrase": "red square",
        "rles": rles if rles is not None else [],
    }
    return TaskSpec(kind=kind, round=round_index, subject_id=f"pair{i}", pair_id=f"pair{i}", payload=payload)


def mv_spec(i: int, round_index: int = 1) -> TaskSpec:
    counts = square(i % 12, 0)
    payload = {
        "media_id": "m0",
        "uri": "mem://m0.png",
        "height": H,
        "width": W,
        "noun_phrase": "red square",
        "instance_id": f"pair0:{i:03d}",
        "rle": counts,
        "box_xyxy": rle.box_xyxy(counts, H, W),
    }
    return TaskSpec(
        kind="mv", round=round_index, subject_id=f"pair0:{i:03d}", pair_id="pair0", payload=payload
    )


class Clock:
    """A settable clock, so lease expiry is tested without sleeping."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t
