"""Scene sampling and rendering of the RENDERED (synthetic) shapes domain, with exact visible masks.

Real photographs have no exact ground truth; this renderer does, which is what lets the demo measure
the engine. Hard cases of real data are imitated on purpose: textured, cluttered backgrounds; scale
from a few pixels to a third of the image; rotation; occlusion (later objects cover earlier ones and
every mask is the *visible* part); crowds of 30+ small objects. Masks are exact because objects are
drawn without anti-aliasing: a pixel belongs to exactly one object or to the background.

Two orthogonal knobs: `SceneStyle` says how hard a scene is (crowds, object count, sizes, clutter);
`Look` says how it appears (background texture, lighting, noise, object scale). The default look is the
one every shipped checkpoint was trained on; `SHIFTED_LOOK` is a second domain, the way a team's own
photos differ from SAM 3's training data, for showing that retraining adapts the model to it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import scipy.ndimage
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

# Salt of the look's own RNG stream: a look never consumes draws of the scene's RNG, so a seed places the
# same objects in every look (with the same radius_scale) and the default look renders as it always did.
_LOOK_STREAM = 0x1005


@dataclass(frozen=True)
class Look:
    """How the rendered scenes appear, independent of how hard they are (`SceneStyle`).

    The defaults are the original domain and render byte-identical images. Lighting (contrast, a
    colour-temperature cast, a brightness ramp across the image) applies to the whole image, objects
    included, but stays mild enough that a colour keeps its name: a red object still reads as red.
    Ranges are drawn per image from the look's own RNG stream.
    """

    name: str = "default"
    # "mottled": low-saturation grey mottle (the original); "stripes": a coloured two-tone gradient with
    # soft sinusoidal stripes and fine grain.
    background: Literal["mottled", "stripes"] = "mottled"
    contrast: tuple[float, float] = (1.0, 1.0)  # gain around mid-grey
    temperature: float = 0.0  # max colour cast: red gain 1 + 0.08 t, blue gain 1 - 0.1 t, t in [-max, max]
    light: tuple[float, float] = (1.0, 1.0)  # brightness ramp across the image, darkest..brightest gain
    noise: float = 4.0  # sensor noise (std, grey levels)
    radius_scale: float = 1.0  # multiplies the style's object radius range (crowds keep their grid)
    blur: tuple[float, float] = (0.0, 0.0)  # defocus: Gaussian blur sigma range (px), before sensor noise

    def __post_init__(self) -> None:
        for field_name in ("contrast", "light"):
            lo, hi = getattr(self, field_name)
            if not 0.0 < lo <= hi <= 2.0:
                raise ValueError(f"Look.{field_name} needs 0 < low <= high <= 2, got {(lo, hi)!r}")
        if not 0.0 <= self.temperature <= 1.0:
            raise ValueError(f"Look.temperature must be in [0, 1], got {self.temperature!r}")
        if self.noise < 0:
            raise ValueError(f"Look.noise must be >= 0, got {self.noise!r}")
        lo, hi = self.blur
        if not 0.0 <= lo <= hi <= 4.0:
            raise ValueError(f"Look.blur needs 0 <= low <= high <= 4 (sigma, px), got {self.blur!r}")
        if not 0.0 < self.radius_scale <= 2.0:
            raise ValueError(f"Look.radius_scale must be in (0, 2], got {self.radius_scale!r}")
        if self.background not in ("mottled", "stripes"):
            raise ValueError(f"Look.background must be 'mottled' or 'stripes', got {self.background!r}")

    @property
    def lit(self) -> bool:
        """Whether the lighting transform changes anything (the default look skips it exactly)."""
        return self.contrast != (1.0, 1.0) or self.temperature > 0 or self.light != (1.0, 1.0)


DEFAULT_LOOK = Look()
# A second domain: coloured striped backgrounds, lower contrast, a warm or cool cast, uneven light, grain,
# out of focus. The blur is what costs the shipped checkpoint points (its seen concepts on the demo's gold:
# 25.8 cgF1 on plain images, 18.2 on shifted ones); without it the look cost about 1.
SHIFTED_LOOK = Look(
    name="shifted",
    background="stripes",
    contrast=(0.8, 0.9),
    temperature=1.0,
    light=(0.88, 1.12),
    noise=6.0,
    blur=(2.0, 3.0),
)
LOOKS = {"default": DEFAULT_LOOK, "shifted": SHIFTED_LOOK}


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


def _hsv_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (all in [0, 1]) as RGB in [0, 255]."""
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return 255 * v * (1 - s * np.clip(np.minimum(k, 4 - k), 0, 1))


def _striped_background(rng: np.random.Generator, size: int, max_lines: int) -> np.ndarray:
    """A coloured gradient between two hues, soft sinusoidal stripes at a random angle, fine grain and
    darker clutter lines: clearly another place than the mottled grey, still never mistakable for a shape."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    h0 = rng.uniform(0, 1)
    c0 = _hsv_rgb(h0, rng.uniform(0.35, 0.6), rng.uniform(0.5, 0.72))
    c1 = _hsv_rgb((h0 + rng.uniform(0.15, 0.45)) % 1, rng.uniform(0.35, 0.6), rng.uniform(0.5, 0.72))
    a = rng.uniform(0, 2 * np.pi)
    ramp = np.clip((xx - 0.5) * np.cos(a) + (yy - 0.5) * np.sin(a) + 0.5, 0, 1)[..., None]
    img = c0 * (1 - ramp) + c1 * ramp
    b = rng.uniform(0, np.pi)
    period = rng.uniform(6, 14) / size
    phase = 2 * np.pi * (xx * np.cos(b) + yy * np.sin(b)) / period
    img = img + rng.uniform(14, 24) * np.sin(phase)[..., None]
    grain = rng.normal(0, 1, (size // 2 + 1, size // 2 + 1, 3)).repeat(2, 0).repeat(2, 1)[:size, :size]
    pil = Image.fromarray(np.clip(img + 5 * grain, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(4, max_lines + 1))):
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        tone = np.clip(c0 * rng.uniform(0.45, 0.75), 0, 255).astype(int)
        draw.line([(x0, y0), (x1, y1)], fill=tuple(int(v) for v in tone), width=int(rng.integers(1, 4)))
    return np.asarray(pil, dtype=np.float64).copy()


def _light(canvas: np.ndarray, rng: np.random.Generator, look: Look) -> np.ndarray:
    """The look's lighting on the whole image: contrast around mid-grey, a warm or cool colour cast, and
    a linear brightness ramp in a random direction. Masks are untouched: only pixel values change."""
    size_y, size_x = canvas.shape[:2]
    contrast = rng.uniform(*look.contrast)
    t = rng.uniform(-look.temperature, look.temperature)
    gains = np.array([1 + 0.08 * t, 1.0, 1 - 0.1 * t])
    a = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size_y, 0:size_x].astype(np.float64)
    ramp = (xx / size_x - 0.5) * np.cos(a) + (yy / size_y - 0.5) * np.sin(a)  # in [-0.71, 0.71]
    lo, hi = look.light
    light = (lo + hi) / 2 + (hi - lo) * ramp / np.sqrt(2)
    return ((canvas - 128) * contrast + 128) * gains * light[..., None]


def _defocus(canvas: np.ndarray, rng: np.random.Generator, sigma_range: tuple[float, float]) -> np.ndarray:
    """An out-of-focus camera: the whole image blurred by a Gaussian of a sigma drawn from the range."""
    sigma = rng.uniform(*sigma_range)
    return scipy.ndimage.gaussian_filter(canvas, sigma=(sigma, sigma, 0), mode="nearest")


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


def compose(
    objects: list[Placed],
    background: np.ndarray,
    rng: np.random.Generator,
    crowd: bool,
    look: Look = DEFAULT_LOOK,
    look_rng: np.random.Generator | None = None,
) -> Scene:
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
    if look.lit:
        canvas = _light(canvas, look_rng or rng, look)
    if look.blur[1] > 0:
        canvas = _defocus(canvas, look_rng or rng, look.blur)
    canvas = canvas + rng.normal(0, look.noise, canvas.shape)  # sensor noise; masks stay exact
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return Scene(image, instances, [objects[k] for k in keep], len(objects) - len(keep), crowd)


def render_scene(
    seed: int,
    image_size: int = 192,
    leaves: list[str] | None = None,
    crowd: bool | None = None,
    style: SceneStyle = FULL_STYLE,
    look: Look = DEFAULT_LOOK,
) -> Scene:
    """Render one scene, fully determined by `seed`, `style` and `look`. `crowd=None` draws a crowd at the
    style's share. The look draws from its own RNG stream, so the objects depend on the seed and style
    only (and the look's radius_scale)."""
    rng = np.random.default_rng(seed)
    look_rng = np.random.default_rng([seed, _LOOK_STREAM])
    leaves = sorted(OUTLINES) if leaves is None else leaves
    is_crowd = bool(rng.random() < style.crowd_share) if crowd is None else crowd
    background = _background(rng, image_size, style.max_clutter_lines)  # drawn always: keeps the stream
    if look.background == "stripes":
        background = _striped_background(look_rng, image_size, style.max_clutter_lines)
    if look.radius_scale != 1.0:
        style = replace(
            style,
            min_radius=min(0.5, style.min_radius * look.radius_scale),
            max_radius=min(0.5, style.max_radius * look.radius_scale),
        )
    objects = sample_objects(rng, image_size, leaves, is_crowd, style)
    return compose(objects, background, rng, is_crowd, look, look_rng)
