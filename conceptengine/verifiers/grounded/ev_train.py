"""Training and scoring the grounded EV scorer (ev_model.py) on verifier examples of task "ev".

Each example is an image, a phrase, the boxes shown and the answer. Where the objects of the image are
known (the demo knows them from the rendered world), each also brings the targets that teach both halves
fast: for the detector, the cells where an object nobody boxed is centred and every object's size; for the
judge, every object's crop with its slot values. The loss is the verdict's (binary cross-entropy on Accept),
the missed cells' (per-cell binary cross-entropy, normalised by the objects in view, the cells around each
centre cell left out), the sizes' (L1 on log side at object centres; with `centre_offsets` also where in
the cell each centre lies), the slots' (cross-entropy on the
objects' crops) and, for a scorer with `silhouette`, the foreground's (per-pixel binary cross-entropy against
the union of the objects' masks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from conceptengine.verifiers.choices import EV
from conceptengine.verifiers.grounded.ev_model import (
    GroundedEVModel,
    candidate_cells,
    crop_objects,
    neighbourhood_max,
)
from conceptengine.verifiers.grounded.phrases import PhraseEmbedder
from conceptengine.verifiers.grounded.train import UNKNOWN, fit, needs_loss, needs_targets, verdict_loss

MAX_JUDGED = 128  # object crops per batch that teach the judge its slots


@dataclass(frozen=True)
class SceneObject:
    """An object of an example's image: its box (xyxy in [0, 1]), slot values, and whether a shown mask
    matches it (it is boxed)."""

    box: tuple[float, float, float, float]
    slots: dict[str, str]
    boxed: bool

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass
class EVData:
    images: torch.Tensor  # (M, 3, S, S) uint8, each image once
    media: torch.Tensor  # (N,) index into images
    boxes: list[np.ndarray]  # per example (k, 4) xyxy in [0, 1]
    phrases: list[str]
    choices: torch.Tensor  # (N,) index into EV.names
    missed: torch.Tensor  # (N, G, G) 1 where an unboxed object is centred
    dense: torch.Tensor  # (N,) bool: the example's objects are known (else `missed` is no target)
    objects: list[torch.Tensor]  # per image (n, 4) boxes xyxy in [0, 1] of its known objects
    object_slots: list[torch.Tensor]  # per image (n, n_slots) value index of each, or UNKNOWN
    # (N, sum of slot sizes): 1 where the phrase accepts the value, 0 where not, NaN rows unknown; None: none
    needs: torch.Tensor | None = None
    # (M, S, S) uint8 per image: 1 on any of its known objects' masks; None where no masks are known
    foreground: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.phrases)


def box_channel(boxes: np.ndarray, size: int) -> torch.Tensor:
    """(size, size) float32: 1 inside any box (xyxy in [0, 1])."""
    out = torch.zeros((size, size))
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        c0, r0 = int(np.floor(x0 * size)), int(np.floor(y0 * size))
        out[max(r0, 0) : int(np.ceil(y1 * size)), max(c0, 0) : int(np.ceil(x1 * size))] = 1.0
    return out


def mask_tensor(mask: np.ndarray, size: int) -> torch.Tensor:
    """(size, size) uint8: a boolean mask resized to the scorer's square input (nearest neighbour)."""
    resized = Image.fromarray(mask.astype(np.uint8)).resize((size, size), Image.NEAREST)
    return torch.from_numpy(np.asarray(resized).copy())


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
    needs: Callable[[str], np.ndarray | None] | None = None,
    foreground: Callable[[dict], np.ndarray] | None = None,
) -> EVData:
    """`rows`: EXAMPLES rows of task ev (grouped by image); `objects[i]`: the objects of example i's image
    with `boxed` for its shown masks, or None where unknown (no targets but the verdict then); `needs(phrase)`:
    what the phrase accepts per slot value (slots.phrase_needs), or None where unknown; `foreground(row)`:
    the (H, W) boolean union of the masks of the row's image's objects, for scorers with `silhouette`."""
    index = [(name, {v: i for i, v in enumerate(values)}) for name, values in slots]
    images, media, uris = [], [], {}
    known: list[torch.Tensor] = []
    known_slots: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    missed = torch.zeros((len(rows), grid, grid))
    for n, (r, objs) in enumerate(zip(rows, objects, strict=True)):
        if r["uri"] not in uris:
            uris[r["uri"]] = len(images)
            images.append(image_tensor(read_image(r["uri"]), image_size))
            known.append(torch.tensor([o.box for o in objs or []], dtype=torch.float32).reshape(-1, 4))
            values = [[names.get(o.slots.get(name), UNKNOWN) for name, names in index] for o in objs or []]
            known_slots.append(torch.tensor(values, dtype=torch.long).reshape(-1, len(index)))
            if foreground is not None:
                masks.append(mask_tensor(foreground(r), image_size))
        media.append(uris[r["uri"]])
        for obj in objs or []:
            if not obj.boxed:
                gx, gy = (min(int(c * grid), grid - 1) for c in obj.centre)
                missed[n, gy, gx] = 1.0
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
        objects=known,
        object_slots=known_slots,
        needs=None
        if needs is None
        else needs_targets([r["noun_phrase"] for r in rows], needs, sum(len(v) for _, v in slots)),
        foreground=torch.stack(masks) if masks else None,
    )


def pixels_of(data: EVData, idx: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 4, S, S): RGB in [0, 1] and the box channel (`images` replaces the data's, e.g. for a swap)."""
    images = data.images if images is None else images
    rgb = images[data.media[idx]].float() / 255.0
    size = rgb.shape[-1]
    boxes = torch.stack([box_channel(data.boxes[int(i)], size) for i in idx])
    return torch.cat([rgb, boxes[:, None]], dim=1)


def centres_sides(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) centres and (N,) longer sides of (N, 4) xyxy boxes: how a crop frames each object."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]).amax(-1)


def _flipped(boxes: torch.Tensor) -> torch.Tensor:
    return torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], dim=-1)


def jittered(centres: torch.Tensor, sides: torch.Tensor, cell: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Objects framed as the scorer frames its candidates: centred anywhere in the centre's grid cell
    (`cell` wide, in the boxes' units), the size off by up to 20% (the side head's guess)."""
    shift = (torch.rand_like(centres) - 0.5) * cell
    return centres + shift, sides * torch.empty_like(sides).uniform_(0.8, 1.2)


def judge_loss(
    model: GroundedEVModel,
    view: torch.Tensor,
    which: torch.Tensor,
    centres: torch.Tensor,
    sides: torch.Tensor,
    slots: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy of the judge's value for each slot of each object, where the value is known; object k is
    cropped from `view[which[k]]` (what the judge reads: GroundedEVModel.judge_input) around its centre and
    side (in [0, 1]), jittered as candidates are framed."""
    c = model.config
    centres, sides = jittered(centres, sides, c.centre_jitter / c.grid)
    crops = crop_objects(view, which, centres * c.image_size, sides * c.image_size, c.crop_size)
    loss = crops.new_zeros(())
    for s, logits in enumerate(model.judge_values(crops)):
        target = slots[:, s]
        ok = target != UNKNOWN
        if ok.any():
            loss = loss + F.cross_entropy(logits[ok], target[ok])
    return loss


def true_foreground(data: EVData, images: torch.Tensor) -> torch.Tensor:
    """(B, S, S) float: the known objects' union mask of each of `images` (indices into data.images)."""
    if data.foreground is None:
        raise ValueError(
            "this EV scorer has `silhouette`, and its training examples carry no object masks to learn the "
            "foreground from: pass `foreground` to ev_train.prepare"
        )
    return data.foreground[images].float()


def foreground_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel binary cross-entropy of (B, S/2, S/2) foreground logits against (B, S, S) masks, each
    target pixel the share of its 2x2 block on an object."""
    return F.binary_cross_entropy_with_logits(logits, F.avg_pool2d(target[:, None], 2)[:, 0])


def loss_on(model: GroundedEVModel, data: EVData, idx: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    c = model.config
    pixels, missed = pixels_of(data, idx), data.missed[idx]
    dense = data.dense[idx]
    fg = true_foreground(data, data.media[idx][dense]) if c.silhouette and dense.any() else None
    flip = bool(torch.rand(()) < 0.5)  # mirror image, boxes and targets alike
    if flip:
        pixels, missed = pixels.flip(-1), missed.flip(-1)
        fg = None if fg is None else fg.flip(-1)
    out = model(pixels, embeds[idx])
    loss = verdict_loss(out.accept_logits, out.other_logits, data.choices[idx])
    loss = loss + needs_loss(model.needs, embeds[idx], data.needs, idx)
    if not dense.any():  # verdicts alone (a run's human answers) say nothing about where objects are
        return loss
    if fg is not None:
        loss = loss + foreground_loss(out.foreground_logits[dense], fg)
    target = missed[dense]
    # a cell next to an object's centre cell is no negative: the centre of a box is only known to a cell
    near = neighbourhood_max(target) > target
    per_cell = F.binary_cross_entropy_with_logits(
        out.missed_logits[dense], target, weight=(~near).float(), reduction="sum"
    )
    loss = loss + per_cell / max(float(target.sum()), float(dense.sum()))
    # every known object of the batch's images: its size at its centre cell, its slots from its crop
    rows = [i for i in range(len(idx)) if dense[i]]
    which = torch.tensor(
        [i for i in rows for _ in range(len(data.objects[int(data.media[idx[i]])]))], dtype=torch.long
    )
    if len(which) == 0:
        return loss
    boxes = torch.cat([data.objects[int(data.media[idx[i]])] for i in rows])
    slots = torch.cat([data.object_slots[int(data.media[idx[i]])] for i in rows])
    if flip:
        boxes = _flipped(boxes)
    keep = torch.randperm(len(which))[:MAX_JUDGED]
    which, boxes, slots = which[keep], boxes[keep], slots[keep]
    centres, sides = centres_sides(boxes)
    sides = sides.clamp_min(1.0 / c.image_size)
    g = c.grid
    cells = (centres * g).long().clamp(0, g - 1)
    predicted = out.side_logits[which, cells[:, 1], cells[:, 0]]
    loss = loss + F.l1_loss(predicted, sides.log())
    if out.offset_logits is not None:  # where in its cell each centre lies
        within = torch.sigmoid(out.offset_logits[which, :, cells[:, 1], cells[:, 0]])
        loss = loss + F.l1_loss(within, centres * g - cells)
    # the judge reads the predicted foreground here, as it will when scoring
    view = model.judge_input(pixels[:, :3], out.foreground_logits)
    return loss + judge_loss(model, view, which, centres, sides, slots)


def train_foreground(
    model: GroundedEVModel,
    data: EVData,
    steps: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> dict:
    """Teach a `silhouette` scorer's detector and foreground head the objects' masks alone (no box shown),
    so the judge can then learn on the foreground it will read when scoring."""
    n_images = len(data.images)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        rgb, target = data.images[idx].float() / 255.0, true_foreground(data, idx)
        if torch.rand(()) < 0.5:
            rgb, target = rgb.flip(-1), target.flip(-1)
        pixels = torch.cat([rgb, torch.zeros_like(rgb[:, :1])], dim=1)
        return foreground_loss(model.detect(pixels)[1], target)

    return fit(model, n_images, batch_loss, steps, min(batch_size, n_images), lr, seed, on_epoch)


@torch.no_grad()
def predicted_foreground(model: GroundedEVModel, data: EVData) -> torch.Tensor:
    """(M, S, S) float16: P(object) per pixel of each of the data's images, as the scorer predicts it with no
    box shown (what `train_judge` can crop from instead of the true masks)."""
    model.eval()
    out = []
    for i in range(0, len(data.images), 64):
        rgb = data.images[i : i + 64].float() / 255.0
        logits = model.detect(torch.cat([rgb, torch.zeros_like(rgb[:, :1])], dim=1))[1]
        out.append(model.judge_input(rgb, logits)[:, 3].half())
    return torch.cat(out)


def train_judge(
    model: GroundedEVModel,
    data: EVData,
    steps: int,
    batch_size: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
    foreground: torch.Tensor | None = None,
) -> dict:
    """Teach the judge its slots alone, on the crops of every known object, before the whole scorer trains.
    A crop costs no detector pass, so in the same minutes the judge sees many more objects than the joint
    loss's MAX_JUDGED a batch; leaf shapes need them. With `silhouette` the crops carry `foreground` (M, S, S)
    in [0, 1] (`predicted_foreground` after `train_foreground`: what the judge will read when scoring), or the
    objects' true masks without it."""
    c = model.config
    owner = torch.cat([torch.full((len(b),), m, dtype=torch.long) for m, b in enumerate(data.objects)])
    boxes, slots = torch.cat(data.objects), torch.cat(data.object_slots)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        images, which = owner[idx].unique(return_inverse=True)
        view, box = data.images[images].float() / 255.0, boxes[idx]
        if c.silhouette:
            fg = true_foreground(data, images) if foreground is None else foreground[images].float()
            view = torch.cat([view, fg[:, None]], dim=1)
        if torch.rand(()) < 0.5:
            view, box = view.flip(-1), _flipped(box)
        centres, sides = centres_sides(box)
        return judge_loss(model, view, which, centres, sides.clamp_min(1.0 / c.image_size), slots[idx])

    return fit(model, len(owner), batch_loss, steps, min(batch_size, len(owner)), lr, seed, on_epoch)


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
    with torch.no_grad():  # start every cell at P(missed object) = 1% and objects a sixth of the image wide
        model.missed.bias.fill_(-4.6)
        model.side.bias.fill_(float(np.log(1 / 6)))
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


@torch.no_grad()
def halves(model: GroundedEVModel, data: EVData) -> dict:
    """How each half does where the objects are known: `candidate_recall`, the share of unboxed objects whose
    centre cell is a candidate or next to one (the crop then still frames the object); `judge_accuracy`,
    per slot, the share of objects whose crop the judge gives the right value (with `silhouette`, on the
    foreground it predicts, and `foreground_iou` of that prediction with the objects' masks; with
    `centre_offsets`, `centre_error_px`, how far a centre placed by its cell's offset is from the object's).
    Tells which half to train more when the verdict lags."""
    model.eval()
    c, rows = model.config, torch.nonzero(data.dense).flatten()
    found = total = 0
    off_error, off_n = 0.0, 0
    for i in range(0, len(rows), 128):
        idx = rows[i : i + 128]
        out = model(pixels_of(data, idx), torch.zeros(len(idx), c.text_dim))
        missed = out.missed_logits
        if out.offset_logits is not None:
            for k, row in enumerate(idx.tolist()):
                centres = centres_sides(data.objects[int(data.media[row])])[0] * c.grid
                cells = centres.long().clamp(0, c.grid - 1)
                within = torch.sigmoid(out.offset_logits[k][:, cells[:, 1], cells[:, 0]]).T
                off_error += float((cells + within - centres).norm(dim=-1).sum()) * c.stride
                off_n += len(centres)
        picked = torch.zeros_like(missed.flatten(1))
        picked.scatter_(1, candidate_cells(missed, min(c.candidates, picked.shape[1])), 1.0)
        picked = neighbourhood_max(picked.view_as(missed)).flatten(1) > 0
        target = data.missed[idx].flatten(1) > 0
        found, total = found + int((picked & target).sum()), total + int(target.sum())
    right = torch.zeros(len(c.slots))
    seen = torch.zeros(len(c.slots))
    fg = (
        predicted_foreground(model, data) if c.silhouette else None
    )  # as the scorer predicts it, no box shown
    for m, (boxes, slots) in enumerate(zip(data.objects, data.object_slots, strict=True)):
        if not len(boxes):
            continue
        view = data.images[m : m + 1].float() / 255.0
        if fg is not None:
            view = torch.cat([view, fg[m : m + 1, None].float()], dim=1)
        centres, sides = centres_sides(boxes)
        which = torch.zeros(len(boxes), dtype=torch.long)
        crops = crop_objects(view, which, centres * c.image_size, sides * c.image_size, c.crop_size)
        for s, logits in enumerate(model.judge_values(crops)):
            ok = slots[:, s] != UNKNOWN
            right[s] += int((logits.argmax(-1)[ok] == slots[ok, s]).sum())
            seen[s] += int(ok.sum())
    return {
        "candidate_recall": round(found / total, 4) if total else None,
        "judge_accuracy": {
            name: round(float(right[s] / seen[s]), 4) if seen[s] else None
            for s, (name, _) in enumerate(c.slots)
        },
        **({"foreground_iou": _iou(fg > 0.5, data.foreground)} if fg is not None else {}),
        **({"centre_error_px": round(off_error / off_n, 2) if off_n else None} if c.centre_offsets else {}),
    }


def _iou(predicted: torch.Tensor, truth: torch.Tensor | None) -> float | None:
    if truth is None:
        return None
    union = int((predicted | (truth > 0)).sum())
    return round(int((predicted & (truth > 0)).sum()) / union, 4) if union else None
