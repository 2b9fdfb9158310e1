"""Stable ids. Every stage is idempotent because every row is keyed by a hash of what it is."""

from __future__ import annotations

import hashlib
import re

_WS = re.compile(r"\s+")


def _h(*parts: str, n: int = 16) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:n]


def normalize_np(noun_phrase: str) -> str:
    """Lower-case, trim and collapse whitespace: 'Red  Square ' and 'red square' are one NP."""
    return _WS.sub(" ", noun_phrase.strip().lower())


def media_id_for_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def pair_id(media_id: str, noun_phrase: str) -> str:
    return _h(media_id, normalize_np(noun_phrase))


def instance_id(pair: str, index: int) -> str:
    return f"{pair}:{index:03d}"


def task_id(subject_id: str, kind: str, round_index: int) -> str:
    return _h(subject_id, kind, str(round_index))


def stable_seed(seed: int, *parts: str) -> int:
    """A per-item RNG seed: results never depend on the order rows arrive in (Ray reorders them)."""
    return int(_h(str(seed), *parts, n=12), 16)
