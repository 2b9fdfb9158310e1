"""scripts/draw_verifier_inputs.py: the README's picture of what the grounded verifiers see."""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import draw_verifier_inputs as drawing


def test_it_draws_the_seven_panels(tmp_path) -> None:
    out = drawing.draw(tmp_path / "inputs.png")
    sheet = np.asarray(Image.open(out).convert("L"))
    assert sheet.shape == (drawing.PANEL + 18, 7 * (drawing.PANEL + 6))
    ev_boxes = sheet[18:, 6 * (drawing.PANEL + 6) :][:, : drawing.PANEL]
    assert 0 < (ev_boxes > 128).mean() < 0.5  # some boxes filled in, and one instance left out
    zoomed_in, zoomed_out = (sheet[18:, k * (drawing.PANEL + 6) :][:, : drawing.PANEL] for k in (2, 4))
    assert (zoomed_out > 128).mean() < (zoomed_in > 128).mean() / 3  # the same mask, zoomed out
