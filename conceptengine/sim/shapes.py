"""Outlines of the renderable leaf concepts, in unit coordinates (y up, fits the unit circle).

A shape is a list of parts `(vertices, add)`: parts are filled in order, `add=False` cuts a hole,
which is how a ring or a crescent is drawn without curves. Each outline takes the object's RNG so
that e.g. rectangles vary in aspect ratio but never become squares: the class must stay decidable
from the outline alone, whatever the rotation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Part = tuple[np.ndarray, bool]
Outline = Callable[[np.random.Generator], list[Part]]


def _poly(points: list[tuple[float, float]]) -> np.ndarray:
    return np.asarray(points, dtype=np.float64)


def _ngon(
    n: int, radius: float = 1.0, phase: float = np.pi / 2, cx: float = 0.0, cy: float = 0.0
) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1)


def _ellipse(rx: float, ry: float, n: int = 48) -> np.ndarray:
    t = 2 * np.pi * np.arange(n) / n
    return np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)


def _normalize(parts: list[Part]) -> list[Part]:
    """Centre the filled parts' box on the origin and scale them into the unit circle."""
    filled = np.concatenate([p for p, add in parts if add])
    centre = (filled.min(axis=0) + filled.max(axis=0)) / 2
    scale = np.linalg.norm(filled - centre, axis=1).max()
    return [((p - centre) / scale, add) for p, add in parts]


def equilateral_triangle(rng: np.random.Generator) -> list[Part]:
    return [(_ngon(3), True)]


def right_triangle(rng: np.random.Generator) -> list[Part]:
    a, b = 1.0, rng.uniform(0.75, 1.25)
    return [(_poly([(0, 0), (a, 0), (0, b)]), True)]


def square(rng: np.random.Generator) -> list[Part]:
    return [(_poly([(-1, -1), (1, -1), (1, 1), (-1, 1)]), True)]


def rectangle(rng: np.random.Generator) -> list[Part]:
    h = 1 / rng.uniform(1.8, 2.4)
    return [(_poly([(-1, -h), (1, -h), (1, h), (-1, h)]), True)]


def diamond(rng: np.random.Generator) -> list[Part]:
    w = rng.uniform(0.45, 0.62)  # never 1: a rhombus with right angles would be a square
    return [(_poly([(0, -1), (w, 0), (0, 1), (-w, 0)]), True)]


def trapezoid(rng: np.random.Generator) -> list[Part]:
    top = rng.uniform(0.4, 0.55)
    return [(_poly([(-1, -0.6), (1, -0.6), (top, 0.6), (-top, 0.6)]), True)]


def parallelogram(rng: np.random.Generator) -> list[Part]:
    s = rng.uniform(0.45, 0.65)
    return [(_poly([(-1, -0.5), (1 - s, -0.5), (1, 0.5), (-1 + s, 0.5)]), True)]


def kite(rng: np.random.Generator) -> list[Part]:
    w = rng.uniform(0.55, 0.7)
    return [(_poly([(0, 1), (w, 0.4), (0, -1), (-w, 0.4)]), True)]


def pentagon(rng: np.random.Generator) -> list[Part]:
    return [(_ngon(5), True)]


def hexagon(rng: np.random.Generator) -> list[Part]:
    return [(_ngon(6), True)]


def octagon(rng: np.random.Generator) -> list[Part]:
    return [(_ngon(8, phase=np.pi / 8), True)]


def circle(rng: np.random.Generator) -> list[Part]:
    return [(_ellipse(1, 1), True)]


def ellipse(rng: np.random.Generator) -> list[Part]:
    return [(_ellipse(1, 1 / rng.uniform(1.7, 2.3)), True)]


def ring(rng: np.random.Generator) -> list[Part]:
    return [(_ellipse(1, 1), True), (_ellipse(*(2 * [rng.uniform(0.5, 0.62)])), False)]


def semicircle(rng: np.random.Generator) -> list[Part]:
    t = np.linspace(0, np.pi, 25)
    return [(np.stack([np.cos(t), np.sin(t)], axis=1), True)]


def crescent(rng: np.random.Generator) -> list[Part]:
    r = rng.uniform(0.82, 0.92)
    return [(_ellipse(1, 1), True), (_ngon(48, r, 0.0, cx=0.45), False)]


def star(rng: np.random.Generator) -> list[Part]:
    outer, inner = _ngon(5), _ngon(5, 0.42, np.pi / 2 + np.pi / 5)
    return [(np.stack([outer, inner], axis=1).reshape(-1, 2), True)]


def cross(rng: np.random.Generator) -> list[Part]:
    a = rng.uniform(0.3, 0.4)
    pts = [
        (a, a),
        (a, 1),
        (-a, 1),
        (-a, a),
        (-1, a),
        (-1, -a),
        (-a, -a),
        (-a, -1),
        (a, -1),
        (a, -a),
        (1, -a),
        (1, a),
    ]
    return [(_poly(pts), True)]


def heart(rng: np.random.Generator) -> list[Part]:
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return [(np.stack([x, y], axis=1), True)]


def arrow(rng: np.random.Generator) -> list[Part]:
    s = rng.uniform(0.16, 0.24)
    return [(_poly([(-1, -s), (0.2, -s), (0.2, -0.5), (1, 0), (0.2, 0.5), (0.2, s), (-1, s)]), True)]


def lightning_bolt(rng: np.random.Generator) -> list[Part]:
    pts = [(-0.25, 1), (0.45, 1), (0.1, 0.2), (0.5, 0.2), (-0.35, -1), (-0.05, -0.1), (-0.45, -0.1)]
    return [(_poly(pts), True)]


def chevron(rng: np.random.Generator) -> list[Part]:
    return [(_poly([(-1, -0.4), (0, 0.6), (1, -0.4), (0.55, -0.4), (0, 0.15), (-0.55, -0.4)]), True)]


OUTLINES: dict[str, Outline] = {
    "equilateral_triangle": equilateral_triangle,
    "right_triangle": right_triangle,
    "square": square,
    "rectangle": rectangle,
    "diamond": diamond,
    "trapezoid": trapezoid,
    "parallelogram": parallelogram,
    "kite": kite,
    "pentagon": pentagon,
    "hexagon": hexagon,
    "octagon": octagon,
    "circle": circle,
    "ellipse": ellipse,
    "ring": ring,
    "semicircle": semicircle,
    "crescent": crescent,
    "star": star,
    "cross": cross,
    "heart": heart,
    "arrow": arrow,
    "lightning_bolt": lightning_bolt,
    "chevron": chevron,
}


def outline(leaf: str, rng: np.random.Generator) -> list[Part]:
    """Normalised parts of one instance of `leaf`."""
    try:
        fn = OUTLINES[leaf]
    except KeyError:
        raise KeyError(f"no outline for concept {leaf!r}; renderable leaves: {sorted(OUTLINES)}") from None
    return _normalize(fn(rng))
