"""The round table shows what routing did: share of items humans saw, thresholds in force, precision."""

from __future__ import annotations

from rich.console import Console

from conceptengine.round.report import _short, round_table

ROUND = {
    "round": 2,
    "pairs_positive": 60,
    "pairs_negative": 400,
    "masks_proposed": 300,
    "auto_accepted": 400,
    "auto_rejected": 100,
    "to_human": 260,
    "human_share": 0.342,
    "thresholds": {"mv": {"accept": 0.97, "reject": 0.02}, "ev": {"accept": 0.999999, "reject": None}},
    "committed_pairs": 450,
    "precision": 0.97,
    "pair_precision": 0.96,
}


def test_thresholds_print_short() -> None:
    assert [_short(t) for t in (0.97, 0.999999, 1e-05, 0.0, 1.0, None)] == [
        ".97",
        "1-1e-6",
        "1e-5",
        "0",
        "1",
        "–",
    ]


def test_round_table_shows_share_seen_thresholds_and_precision() -> None:
    console = Console(width=160, record=True)
    console.print(round_table([{"round": 1, "human_share": 1.0}, ROUND]))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "hum%" in line)
    assert "mv ≥/≤" in header and "ev ≥/≤" in header and "pair✓" in header and "P/R" in header
    row = next(line for line in text.splitlines() if line.strip().startswith("2 "))
    assert "34%" in row and ".97/.02" in row and "1-1e-6/–" in row and "400/100" in row and "0.96" in row
    assert ".97/–" in row  # precision without a recall
    assert "100%" in text


SCORES = {"gold_cgF1": 41.2, "domain_cgF1": 33.4, "reported_cgF1": 12.3, "seen_cgF1": 52.6}


def test_round_table_shows_the_adaptation_within_120_columns() -> None:
    """Per round: gold cgF1 overall, on the shifted domain, on the held family, on the rest, and the
    retrained candidate's score with whether it was promoted."""
    rounds = [
        {"round": 0, "gold_cgF1": 30.0, "candidate_cgF1": None, "promoted": None},
        ROUND | SCORES | {"human_seconds": 2345.6, "model_version": "v0002", "verifiers_promoted": ["mv", "ev"],
                          "candidate_cgF1": 41.2, "promoted": True, "recall": 0.88},
        ROUND | SCORES | {"round": 3, "model_version": "v0002", "candidate_cgF1": 7.5, "promoted": False},
    ]  # fmt: skip
    console = Console(width=200, record=True)
    console.print(round_table(rounds))
    lines = console.export_text().splitlines()
    header = next(line for line in lines if "cgF1" in line)
    assert header.split()[-7:] == ["cgF1", "shift", "held", "seen", "cand", "P/R", "pair✓"]
    row2 = next(line for line in lines if line.strip().startswith("2 "))
    assert row2.split()[-7:] == ["41", "33", "12", "53", "41✓", ".97/.88", "0.96"]
    row3 = next(line for line in lines if line.strip().startswith("3 "))
    assert "7.50✗" in row3
    row0 = next(line for line in lines if line.strip().startswith("0 "))
    assert row0.split()[-3:] == ["–", "–", "–"]  # no candidate, no committed data in round 0
    table = lines[: lines.index(row3) + 1]
    assert max(len(line.rstrip()) for line in table) <= 120


def test_a_tiny_negative_score_prints_as_zero_not_minus_zero() -> None:
    console = Console(width=200, record=True)
    console.print(round_table([{"round": 1, "gold_cgF1": -0.0004, "precision": -0.001, "recall": 0.5}]))
    text = console.export_text()
    assert "-0.00" not in text and "-.00" not in text and "0.00" in text
