"""The round table shows what routing did: share of items humans saw, thresholds in force, precision."""

from __future__ import annotations

from rich.console import Console

from conceptengine.engine.report import _short, round_table

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
    header = next(line for line in text.splitlines() if "seen" in line)
    assert "mv ≥/≤" in header and "ev ≥/≤" in header and "pair✓" in header
    row = next(line for line in text.splitlines() if line.strip().startswith("2 "))
    assert "34%" in row and ".97/.02" in row and "1-1e-6/–" in row and "400/100" in row and "0.96" in row
    assert "100%" in text
