"""The report helpers of scripts/train_demo_sam3.py: how a gold NP is classified for the per-kind table."""

import sys
from pathlib import Path

import pytest

from conceptengine.sim.taxonomy import shapes_graph

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import demo_sam3_report as report


@pytest.mark.parametrize(
    ("noun_phrase", "kind"),
    [
        ("shape", "root"),
        ("red object", "root + colour"),
        ("striped blue polygon", "family + colour + pattern"),
        ("dotted sign", "family + pattern"),
        ("triangle", "group"),
        ("red right triangle", "leaf + colour"),
        ("oval", "leaf"),  # a synonym resolves to its leaf
        ("teapot", None),  # not in the ontology: left out of every group
    ],
)
def test_phrase_kind_names_level_and_attributes(noun_phrase, kind):
    assert report.phrase_kind(shapes_graph(), noun_phrase) == kind


def test_phrase_kind_markdown_has_a_row_per_kind():
    counts = {"pairs": 10, "positive_pairs": 4, "il_tp": 3}
    table = report.phrase_kind_markdown(
        {"root": {"cgF1": 12.34, "IL_MCC": 0.5, "pmF1": 0.25, "counts": counts}}
    )
    assert table.splitlines()[-1] == "| root | 10 (4) | 12.3 | 0.50 | 0.25 | 3 of 4 |"
