"""The per-task cost defaults must reproduce the paper's per-NP and per-item seconds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conceptengine.review.cost import CostModel

NEG_SHARE = 0.885  # SA-Co/HQ: 88.5 % of image-NP pairs are negatives


def test_defaults_reproduce_the_paper_per_np() -> None:
    c = CostModel()
    assert c.typical_negative_s() == 30.0
    assert c.typical_positive_all_human_s() == 207.0
    assert c.typical_positive_with_ai_s() == 152.0


def test_defaults_reproduce_the_paper_mix() -> None:
    c = CostModel()
    all_human = NEG_SHARE * c.typical_negative_s() + (1 - NEG_SHARE) * c.typical_positive_all_human_s()
    # With AI verifiers, humans see only the ~20 % of negatives EV is unsure about (30 s -> 6 s).
    with_ai = NEG_SHARE * 0.2 * c.typical_negative_s() + (1 - NEG_SHARE) * c.typical_positive_with_ai_s()
    assert all_human == pytest.approx(50.0, abs=0.5)
    assert with_ai == pytest.approx(23.0, abs=0.5)


def test_seconds_per_task_kind() -> None:
    c = CostModel()
    assert c.seconds("mv", {"rle": "x"}) == 8.0
    assert c.seconds("ev", {"rles": []}) == 30.0
    assert c.seconds("ev", {"rles": ["a", "b", "c"]}) == 15.0 + 3 * 2.0
    assert c.seconds("correction", {"rles": ["a"]}, {"add": ["x", "y"], "remove": [0]}) == 52.0 + 100.0 + 5.0
    assert c.seconds("correction", {"rles": []}, None) == 52.0
    with pytest.raises(ValueError, match="kind"):
        c.seconds("qa", {})


def test_config_is_strict() -> None:
    assert CostModel(mv_per_mask_s=4.0).mv_seconds() == 4.0
    with pytest.raises(ValidationError, match="mv_per_mask"):
        CostModel(mv_per_mask=4.0)
    with pytest.raises(ValidationError, match="ev_absent_s"):
        CostModel(ev_absent_s=-1.0)
