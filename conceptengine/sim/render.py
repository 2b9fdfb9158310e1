"""Scene sampling and rendering of the RENDERED (synthetic) shapes domain, with exact visible masks.

Real photographs have no exact ground truth; this renderer does, which is what lets the demo measure
the engine. Hard cases of real data are imitated on purpose: textured, cluttered backgrounds; scale
from a few pixels to a third of the image; rotation; occlusion (later objects cover earlier ones and
every mask is the *visible* part); crowds of 30+ small objects. Masks are exact because objects are
drawn without anti-aliasing: a pixel belongs to exactly one object or to the background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from conceptengine.sim.shapes import OUTLINES, Part, outline
from conceptengine.sim.taxonomy import PALETTE, PATTERNS

# An instance survives occlusion only with this much of its drawn area (and pixels) still visible;
# SA-Co annotators likewise skip objects they cannot recognise.
MIN_VISIBLE_FRACTION = 0.25
MIN_VISIBLE_PIXELS = 12
CROWD_GRID = 7  # crowd scenes place objects on a jittered 7x7 grid: up to 49, at least 34


@dataclass(frozen=True)
class SceneStyle:
    """How hard the rendered scenes are. The defaults are the full-difficulty domain.

    The demo uses a gentler style (`DEMO_STYLE`): a model small enough to train on a laptop CPU cannot
    learn shapes a few pixels wide, and the demo's point is to show the loop improving a model, which
    needs a model that learns. Every kind of hard case stays in it, only rarer or milder.
    """

    crowd_share: float = 0.15  # share of scenes that are crowds of 34-49 small objects
    max_objects: int = 12  # a non-crowd scene has 1..max_objects objects before occlusion
    min_radius: float = 0.03  # object radius range, as a fraction of the image size (log-uniform)
    max_radius: float = 0.3
    max_clutter_lines: int = 13  # background clutter: 4..max lines

    def __post_init__(self) -> None:
        if not 0.0 <= self.crowd_share <= 1.0:
            raise ValueError(f"SceneStyle.crowd_share must be in [0, 1], got {self.crowd_share!r}")
        if self.max_objects < 1:
            raise ValueError(f"SceneStyle.max_objects must be >= 1, got {self.max_objects!r}")
        if not 0.0 < self.min_radius <= self.max_radius <= 0.5:
            raise ValueError(
                f"SceneStyle radii need 0 < min_radius <= max_radius <= 0.5, got "
                f"{self.min_radius!r}, {self.max_radius!r}"
            )
        if self.max_clutter_lines < 4:
            raise ValueError(f"SceneStyle.max_clutter_lines must be >= 4, got {self.max_clutter_lines!r}")


FULL_STYLE = SceneStyle()
# Fewer, larger objects, rarer crowds, less clutter: what the demo's CPU-trained model can learn.
DEMO_STYLE = SceneStyle(crowd_share=0.05, max_objects=6, min_radius=0.08, max_radius=0.3, max_clutter_lines=8)
STYLES = {"full": FULL_STYLE, "demo": DEMO_STYLE}


@dataclass(frozen=True)
class Placed:
    """One object to draw: what it is, where, how big (circumscribed radius, px), how rotated."""

    leaf: str
    colour: str
    pattern: str
    rgb: tuple[float, float, float]
    cx: float
    cy: float
    radius: float
    angle: float
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class Instance:
    leaf: str
    colour: str
    pattern: str
    mask: np.ndarray  # bool (H, W): the visible pixels


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # uint8 (H, W, 3)
    instances: list[Instance]
    objects: list[Placed]  # the drawn objects, aligned with `instances`
    dropped: int  # objects hidden (almost) entirely by later ones, removed before painting
    crowd: bool


def rasterize(obj: Placed, height: int, width: int) -> np.ndarray:
    """The object's full (unoccluded) mask, clipped to the image."""
    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)
    c, s = np.cos(obj.angle), np.sin(obj.angle)
    for pts, add in obj.parts:
        x = obj.cx + obj.radius * (pts[:, 0] * c - pts[:, 1] * s)
        y = obj.cy - obj.radius * (pts[:, 0] * s + pts[:, 1] * c)  # image y points down
        draw.polygon([(float(a), float(b)) for a, b in zip(x, y, strict=True)], fill=1 if add else 0)
    return np.asarray(img, dtype=bool)


def _place(
    rng: np.random.Generator, leaf: str, colour: str, pattern: str, cx: float, cy: float, r: float
) -> Placed:
    rgb = tuple(float(v) for v in np.clip(np.asarray(PALETTE[colour]) + rng.normal(0, 8, 3), 0, 255))
    return Placed(
        leaf, colour, pattern, rgb, cx, cy, r, float(rng.uniform(0, 2 * np.pi)), tuple(outline(leaf, rng))
    )


def _pick_pattern(rng: np.random.Generator) -> str:
    names = list(PATTERNS)
    probs = np.array([0.4] + [0.6 / (len(names) - 1)] * (len(names) - 1))
    return names[int(rng.choice(len(names), p=probs))]


def sample_objects(
    rng: np.random.Generator, size: int, leaves: list[str], crowd: bool, style: SceneStyle = FULL_STYLE
) -> list[Placed]:
    """Objects of one scene in drawing order (later ones occlude earlier ones)."""
    colours = list(PALETTE)
    if crowd:
        # Crowds are mostly a couple of concepts in a couple of colours, like people in a stadium:
        # that is what makes exhaustive annotation of "red circle" hard.
        main_leaves = list(rng.choice(leaves, size=2, replace=False))
        main_colours = list(rng.choice(colours, size=2, replace=False))
        cell = size / CROWD_GRID
        cells = rng.choice(CROWD_GRID * CROWD_GRID, size=int(rng.integers(34, 50)), replace=False)
        objects = []
        for k in cells:
            row, col = divmod(int(k), CROWD_GRID)
            leaf = str(rng.choice(main_leaves)) if rng.random() < 0.7 else str(rng.choice(leaves))
            colour = str(rng.choice(main_colours)) if rng.random() < 0.7 else str(rng.choice(colours))
            cx = (col + 0.5 + rng.uniform(-0.1, 0.1)) * cell
            cy = (row + 0.5 + rng.uniform(-0.1, 0.1)) * cell
            r = max(3.0, cell * rng.uniform(0.38, 0.55))
            objects.append(_place(rng, leaf, colour, _pick_pattern(rng), cx, cy, r))
        return objects
    if rng.random() < 0.05:
        return []  # empty scenes: every NP is a negative
    n = int(rng.integers(1, style.max_objects + 1))
    r_min, r_max = max(4.0, style.min_radius * size), max(4.0, style.max_radius * size)
    objects = []
    for _ in range(n):
        r = float(np.exp(rng.uniform(np.log(r_min), np.log(r_max))))  # log-uniform: tiny to large
        cx, cy = rng.uniform(0.05 * size, 0.95 * size, 2)
        objects.append(
            _place(rng, str(rng.choice(leaves)), str(rng.choice(colours)), _pick_pattern(rng), cx, cy, r)
        )
    return objects


def _background(rng: np.random.Generator, size: int, max_lines: int = 13) -> np.ndarray:
    """Low-saturation mottled texture plus thin clutter lines: never mistakable for a shape."""
    base = rng.uniform(95, 165) + rng.normal(0, 10, 3)
    low = np.clip(128 + rng.normal(0, 14, (6, 6, 3)), 0, 255).astype(np.uint8)
    mottled = np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BILINEAR), np.float64)
    img = Image.fromarray(np.clip(base + mottled - 128, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, max_lines + 1))):
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        tone = np.clip(base + rng.normal(0, 30) + rng.normal(0, 6, 3), 0, 255).astype(int)
        draw.line([(x0, y0), (x1, y1)], fill=tuple(int(v) for v in tone), width=int(rng.integers(1, 3)))
    return np.asarray(img, dtype=np.float64).copy()


def _secondary(rgb: tuple[float, float, float]) -> np.ndarray:
    """The pattern's second tone: a darker shade of light colours, a lighter one of dark colours."""
    c = np.asarray(rgb)
    return c * 0.45 if c.mean() > 90 else c + (255 - c) * 0.45


def _paint(canvas: np.ndarray, mask: np.ndarray, obj: Placed) -> None:
    ys, xs = np.nonzero(mask)
    dx, dy = xs - obj.cx, ys - obj.cy
    c, s = np.cos(obj.angle), np.sin(obj.angle)
    u, v = dx * c + dy * s, -dx * s + dy * c  # pattern axes turn with the object
    w = max(1.5, obj.radius / 3.5)
    if obj.pattern == "striped":
        second = np.floor(u / w) % 2 == 1
    elif obj.pattern == "checkered":
        second = (np.floor(u / w) + np.floor(v / w)) % 2 == 1
    elif obj.pattern == "dotted":
        du, dv = u - np.round(u / (2 * w)) * 2 * w, v - np.round(v / (2 * w)) * 2 * w
        second = du * du + dv * dv < (0.6 * w) ** 2
    else:
        second = np.zeros(len(ys), dtype=bool)
    canvas[ys, xs] = np.where(second[:, None], _secondary(obj.rgb), np.asarray(obj.rgb))


def compose(objects: list[Placed], background: np.ndarray, rng: np.random.Generator, crowd: bool) -> Scene:
    """Resolve occlusion, drop (almost) hidden objects, paint the rest, and return exact visible masks.

    Removing a hidden object only uncovers pixels of earlier objects or background, so the survivors'
    visibility can only grow: one pass of dropping is enough.
    """
    h, w = background.shape[:2]
    full = [rasterize(o, h, w) for o in objects]
    owner = np.full((h, w), -1, dtype=np.int32)
    for k, m in enumerate(full):
        owner[m] = k
    visible = np.bincount(owner[owner >= 0], minlength=len(objects))
    keep = [
        k for k, m in enumerate(full) if visible[k] >= max(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * m.sum())
    ]
    owner.fill(-1)
    for slot, k in enumerate(keep):
        owner[full[k]] = slot
    canvas = background
    instances = []
    for slot, k in enumerate(keep):
        mask = owner == slot
        _paint(canvas, mask, objects[k])
        instances.append(Instance(objects[k].leaf, objects[k].colour, objects[k].pattern, mask))
    canvas = canvas + rng.normal(0, 4, canvas.shape)  # sensor noise; masks stay exact
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return Scene(image, instances, [objects[k] for k in keep], len(objects) - len(keep), crowd)


def render_scene(
    seed: int,
    image_size: int = 192,
    leaves: list[str] | None = None,
    crowd: bool | None = None,
    style: SceneStyle = FULL_STYLE,
) -> Scene:
    """Render one scene, fully determined by `seed` and `style`. `crowd=None` draws a crowd at the style's share."""
    rng = np.random.default_rng(seed)
    leaves = sorted(OUTLINES) if leaves is None else leaves
    is_crowd = bool(rng.random() < style.crowd_share) if crowd is None else crowd
    background = _background(rng, image_size, style.max_clutter_lines)
    objects = sample_objects(rng, image_size, leaves, is_crowd, style)
    return compose(objects, background, rng, is_crowd)
