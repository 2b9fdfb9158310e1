"""scripts/draw_verifier_inputs.py: the README's picture of what the grounded verifiers see."""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import draw_verifier_inputs as drawing


def test_it_draws_the_eight_panels(tmp_path) -> None:
    out = drawing.draw(tmp_path / "inputs.png")
    sheet = np.asarray(Image.open(out).convert("L"))
    assert sheet.shape == (drawing.PANEL + 18, 8 * (drawing.PANEL + 6))
    rgb = np.asarray(Image.open(out).convert("RGB")).astype(int)
    pieces = rgb[18:, 7 * (drawing.PANEL + 6) :][:, : drawing.PANEL]
    coloured = pieces.max(-1) - pieces.min(-1) > 100  # the pieces' colours, over a dimmed image
    assert 0 < coloured.mean() < 0.5  # the region EV found the unboxed instance (and the boxed ones are out)
    ev_boxes = sheet[18:, 6 * (drawing.PANEL + 6) :][:, : drawing.PANEL]
    assert 0 < (ev_boxes > 128).mean() < 0.5  # some boxes filled in, and one instance left out
    zoomed_in, zoomed_out = (sheet[18:, k * (drawing.PANEL + 6) :][:, : drawing.PANEL] for k in (2, 4))
    assert (zoomed_out > 128).mean() < (zoomed_in > 128).mean() / 3  # the same mask, zoomed out
