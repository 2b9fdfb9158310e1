"""Training and scoring the grounded EV scorer (ev_model.py) on verifier examples of task "ev".

Each example is an image, a phrase, the boxes shown and the answer. Where the objects of the image are
known (the demo knows them from the rendered world), each also brings the dense targets that teach the
grid fast: the cells where an object nobody boxed is centred, and each object's slot values at its centre.
The loss is the verdict's (binary cross-entropy on Accept), the missed cells' (per-cell binary
cross-entropy, normalised by the objects in view) and the slots' (cross-entropy at object centres).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from conceptengine.verifiers.choices import EV
from conceptengine.verifiers.grounded.ev_model import GroundedEVModel
from conceptengine.verifiers.grounded.phrases import PhraseEmbedder
from conceptengine.verifiers.grounded.train import UNKNOWN, fit


@dataclass(frozen=True)
class SceneObject:
    """An object of an example's image: its centre (x, y in [0, 1)), slot values, and whether a shown
    mask matches it (it is boxed)."""

    centre: tuple[float, float]
    slots: dict[str, str]
    boxed: bool


@dataclass
class EVData:
    images: torch.Tensor  # (M, 3, S, S) uint8, each image once
    media: torch.Tensor  # (N,) index into images
    boxes: list[np.ndarray]  # per example (k, 4) xyxy in [0, 1]
    phrases: list[str]
    choices: torch.Tensor  # (N,) index into EV.names
    missed: torch.Tensor  # (N, G, G) 1 where an unboxed object is centred
    dense: torch.Tensor  # (N,) bool: the example's objects are known (else `missed` is no target)
    slot_values: dict[str, torch.Tensor]  # slot -> (M, G, G) value index at object centres, else UNKNOWN

    def __len__(self) -> int:
        return len(self.phrases)


def box_channel(boxes: np.ndarray, size: int) -> torch.Tensor:
    """(size, size) float32: 1 inside any box (xyxy in [0, 1])."""
    out = torch.zeros((size, size))
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        c0, r0 = int(np.floor(x0 * size)), int(np.floor(y0 * size))
        out[max(r0, 0) : int(np.ceil(y1 * size)), max(c0, 0) : int(np.ceil(x1 * size))] = 1.0
    return out


def image_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """(3, size, size) uint8: the image resized to the scorer's square input."""
    resized = Image.fromarray(image).resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(resized).transpose(2, 0, 1).copy())


def normalised_boxes(boxes: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    scale = np.array([width, height, width, height], dtype=np.float64)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / scale


def prepare(
    rows: list[dict],
    read_image: Callable[[str], np.ndarray],
    slots: list[list],
    objects: list[list[SceneObject] | None],
    image_size: int,
    grid: int,
) -> EVData:
    """`rows`: EXAMPLES rows of task ev (grouped by image); `objects[i]`: the objects of example i's image
    with `boxed` for its shown masks, or None where unknown (no dense targets then)."""
    index = {name: {v: i for i, v in enumerate(values)} for name, values in slots}
    images, media, uris = [], [], {}
    slot_maps: dict[str, list[torch.Tensor]] = {name: [] for name, _ in slots}
    missed = torch.zeros((len(rows), grid, grid))
    for n, (r, objs) in enumerate(zip(rows, objects, strict=True)):
        if r["uri"] not in uris:
            uris[r["uri"]] = len(images)
            images.append(image_tensor(read_image(r["uri"]), image_size))
            for maps in slot_maps.values():
                maps.append(torch.full((grid, grid), UNKNOWN, dtype=torch.long))
        m = uris[r["uri"]]
        media.append(m)
        for obj in objs or []:
            gx, gy = (min(int(c * grid), grid - 1) for c in obj.centre)
            if not obj.boxed:
                missed[n, gy, gx] = 1.0
            for name, value in obj.slots.items():
                if name in slot_maps and value in index[name]:
                    slot_maps[name][m][gy, gx] = index[name][value]
    return EVData(
        images=torch.stack(images)
        if images
        else torch.zeros((0, 3, image_size, image_size), dtype=torch.uint8),
        media=torch.tensor(media, dtype=torch.long),
        boxes=[normalised_boxes([k["box_xyxy"] for k in r["masks"]], r["height"], r["width"]) for r in rows],
        phrases=[r["noun_phrase"] for r in rows],
        choices=torch.tensor([EV.index(r["choice"]) for r in rows], dtype=torch.long),
        missed=missed,
        dense=torch.tensor([objs is not None for objs in objects], dtype=torch.bool),
        slot_values={
            name: torch.stack(maps) if maps else torch.zeros((0, grid, grid))
            for name, maps in slot_maps.items()
        },
    )


def pixels_of(data: EVData, idx: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 4, S, S): RGB in [0, 1] and the box channel (`images` replaces the data's, e.g. for a swap)."""
    images = data.images if images is None else images
    rgb = images[data.media[idx]].float() / 255.0
    size = rgb.shape[-1]
    boxes = torch.stack([box_channel(data.boxes[int(i)], size) for i in idx])
    return torch.cat([rgb, boxes[:, None]], dim=1)


def loss_on(model: GroundedEVModel, data: EVData, idx: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    pixels, missed = pixels_of(data, idx), data.missed[idx]
    slot_targets = {name: v[data.media[idx]] for name, v in data.slot_values.items()}
    if torch.rand(()) < 0.5:  # mirror image, boxes and targets alike
        pixels, missed = pixels.flip(-1), missed.flip(-1)
        slot_targets = {name: v.flip(-1) for name, v in slot_targets.items()}
    out = model(pixels, embeds[idx])
    choice = data.choices[idx]
    loss = F.binary_cross_entropy_with_logits(out.accept_logits, (choice == 0).float())
    other = choice > 0
    if other.any():
        loss = loss + F.cross_entropy(out.other_logits[other], choice[other] - 1)
    dense = data.dense[idx]
    if dense.any():  # verdicts alone (a run's human answers) say nothing about where an object was missed
        per_cell = F.binary_cross_entropy_with_logits(
            out.missed_logits[dense], missed[dense], reduction="sum"
        )
        loss = loss + per_cell / max(float(missed[dense].sum()), float(dense.sum()))
    for name, logits in out.slot_logits.items():
        target = slot_targets[name]
        known = target != UNKNOWN
        if known.any():
            loss = loss + F.cross_entropy(logits[known], target[known])
    return loss


def train(
    model: GroundedEVModel,
    data: EVData,
    embedder: PhraseEmbedder,
    steps: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> dict:
    """Train in place for `steps` batches; `on_epoch(step, seconds)` after each pass over the data."""
    embeds = embedder(data.phrases)
    with torch.no_grad():  # start every cell at P(missed object) = 1%: the loss begins near its floor
        model.missed.bias.fill_(-4.6)
    return fit(
        model, len(data), lambda idx: loss_on(model, data, idx, embeds), steps, batch_size, lr, seed, on_epoch
    )


@torch.no_grad()
def accept_probs(
    model: GroundedEVModel, data: EVData, embedder: PhraseEmbedder, images: torch.Tensor | None = None
) -> np.ndarray:
    """P(Accept) per example (`images` replaces the data's images, e.g. for the image-swap test)."""
    model.eval()
    embeds = embedder(data.phrases)
    out = []
    for i in range(0, len(data), 128):
        idx = torch.arange(i, min(i + 128, len(data)))
        out.append(model.choice_probs(pixels_of(data, idx, images), embeds[idx])[:, 0])
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)
