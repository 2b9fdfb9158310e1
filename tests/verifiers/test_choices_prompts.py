from __future__ import annotations

import numpy as np
import pytest

from conceptengine.verifiers import choices, prompts


def test_choice_names_are_the_papers() -> None:
    assert choices.MV.names == ("Accept", "Accept as text", "Flag label", "Whole image", "Reject")
    assert choices.EV.names == (
        "Accept",
        "Reject",
        "Reject but unseparated",
        "Flag label",
        "Whole image",
        "Ungroundable-vague-unsure",
    )
    assert choices.MV.letters == ("A", "B", "C", "D", "E")
    assert choices.EV.letters == ("A", "B", "C", "D", "E", "F")


def test_probability_helpers() -> None:
    mv = np.array([[0.7, 0.1, 0.1, 0.05, 0.05], [0.1, 0.1, 0.1, 0.1, 0.6]])
    np.testing.assert_allclose(choices.p_accept(mv), [0.7, 0.1])
    assert choices.MV.argmax(mv) == ["Accept", "Reject"]
    np.testing.assert_allclose(choices.MV.prob(mv, "Reject"), [0.05, 0.6])
    ev = np.array([0.25, 0.5, 0.05, 0.05, 0.05, 0.1])
    assert choices.presence(ev) == pytest.approx(0.75)
    assert choices.EV.argmax(ev) == "Reject"
    with pytest.raises(ValueError, match="6 columns"):
        choices.p_accept(mv, choices.EV)
    with pytest.raises(KeyError, match="not a mv choice"):
        choices.MV.index("Maybe")


def test_prompts_carry_the_np_and_every_lettered_choice() -> None:
    mv = prompts.mv_prompt('  Red   "square" ')
    assert "\"Red 'square'\"" in mv  # whitespace collapsed, inner quotes cannot close the NP's quotes
    for letter, name in zip(choices.MV.letters, choices.MV.names):
        assert f"\n{letter}. {name}:" in mv
    ev0, ev3 = prompts.ev_prompt("star", 0), prompts.ev_prompt("star", 3)
    assert "No box was proposed" in ev0 and "3 proposed boxes" in ev3
    for letter, name in zip(choices.EV.letters, choices.EV.names):
        assert f"\n{letter}. {name}:" in ev3
    with pytest.raises(ValueError, match="noun phrase"):
        prompts.mv_prompt("   ")
    corpus = prompts.corpus(["star", "blue triangle"])
    assert any('"blue triangle"' in t for t in corpus)
