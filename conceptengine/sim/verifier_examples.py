"""Demo training examples for the verifiers, made from the RENDERED world's exact ground truth.

The demo's verifiers must imitate the demo's humans, so every label here is the answer a simulated
reviewer (sim/reviewers.py) gives with error rate 0 — computed by calling that reviewer, not by a
second copy of its rule. What the reviewers are shown is made to look like what the engine shows them:

- MV: ground-truth masks, and the mistakes a mask proposer makes — shifted, partial (cut), bloated
  (dilated), box-shaped and merged masks, a mask of another object (a concept the NP does not name, the
  typical answer to a hard negative) and whole-image masks. Mild corruptions may still be accepted
  (IoU >= 0.5 with an instance): the reviewer decides, so the boundary is learned where it really is.
- EV: pairs with all, some or none of their instances boxed, an extra box of another object, and
  negative NPs with no box (Accept: nothing to find) or with spurious boxes.

NPs come from the oracle's SA-Co-like pair sampler (positives at every hierarchy level and with attribute
modifiers, half of the negatives hard), the same distribution the demo's gold split uses.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from itertools import groupby
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import ndimage

from conceptengine.engine import ids, rle
from conceptengine.engine.media import load_rgb
from conceptengine.review.cost import CostModel
from conceptengine.review.matching import match
from conceptengine.review.types import Task
from conceptengine.sim.oracle import Oracle
from conceptengine.sim.reviewers import IOU_MATCH, SimulatedReviewer
from conceptengine.sim.world import World
from conceptengine.verifiers.choices import ACCEPT
from conceptengine.verifiers.grounded.ev_train import EVData, SceneObject
from conceptengine.verifiers.grounded.ev_train import prepare as prepare_ev
from conceptengine.verifiers.grounded.slots import phrase_needs
from conceptengine.verifiers.grounded.train import MVData
from conceptengine.verifiers.grounded.train import prepare as prepare_mv
from conceptengine.verifiers.train_data import EXAMPLES

MIN_PIXELS = 12  # the renderer's smallest visible instance; smaller corruptions are not realistic masks
NEGATIVE_SHARE = 0.5  # of each image's pairs: absent phrases, half of them hard negatives


class _Labeller:
    """A simulated reviewer with error rate 0 over an in-memory queue: it only answers, nothing is queued."""

    def __init__(self, world_dir: str | Path):
        self.reviewer = SimulatedReviewer("sqlite://", str(world_dir), "sim:label", 0.0, 0, CostModel())

    def __call__(self, kind: str, pair: dict, masks: list[str]) -> str:
        payload = {k: pair[k] for k in ("media_id", "uri", "height", "width", "noun_phrase")}
        payload |= {"rle": masks[0]} if kind == "mv" else {"rles": masks}
        subject = pair["pair_id"]
        task = Task(
            ids.task_id(subject, kind, 0),
            0,
            kind,
            subject,
            pair["pair_id"],
            payload,
            "leased",
            None,
            None,
            0,
            0.0,
        )
        return self.reviewer.answer(task)[0]


# -- mask corruptions (bool H x W arrays in, bool arrays out) ---------------------------------------------
def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def shifted(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Moved by 0.2-1.2 of its box size: small shifts stay acceptable, large ones are another place."""
    y0, x0, y1, x1 = _bbox(mask)
    frac, angle = rng.uniform(0.2, 1.2), rng.uniform(0, 2 * np.pi)
    dy, dx = round(frac * (y1 - y0) * np.sin(angle)), round(frac * (x1 - x0) * np.cos(angle))
    out = np.zeros_like(mask)
    h, w = mask.shape
    src = mask[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def cut(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A part of the instance: the pixels on one side of a random line, keeping 20-70% of it."""
    ys, xs = np.nonzero(mask)
    angle = rng.uniform(0, 2 * np.pi)
    proj = ys * np.sin(angle) + xs * np.cos(angle)
    keep = proj <= np.quantile(proj, rng.uniform(0.2, 0.7))
    out = np.zeros_like(mask)
    out[ys[keep], xs[keep]] = True
    return out


def dilated(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bloated by 2-8 px: a sloppy mask that leaks into the background."""
    return ndimage.binary_dilation(mask, iterations=int(rng.integers(2, 9)))


def box_filled(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The instance's whole bounding box: what a poor mask head returns."""
    y0, x0, y1, x1 = _bbox(mask)
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = True
    return out


CORRUPTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "shifted": shifted,
    "cut": cut,
    "dilated": dilated,
    "box": box_filled,
}


# -- examples -------------------------------------------------------------------------------------------
def _row(pair: dict, task: str, masks: list[str], choice: str, origin: str) -> dict:
    h, w = pair["height"], pair["width"]
    return {
        "task": task,
        "media_id": pair["media_id"],
        "uri": pair["uri"],
        "height": h,
        "width": w,
        "noun_phrase": pair["noun_phrase"],
        "masks": [{"rle": m, "box_xyxy": rle.box_xyxy(m, h, w)} for m in masks],
        "choice": choice,
        "annotator": "oracle",
        "origin": origin,
        "round": 0,
    }


def _mv_candidates(pair: dict, truth: list[np.ndarray], others: list[np.ndarray], rng) -> list[tuple]:
    """(origin, mask) candidates for one pair; `others` are the image's instances the NP does not name."""
    out: list[tuple[str, np.ndarray]] = []
    if truth:
        for k in rng.permutation(len(truth))[:2]:
            out.append(("gt", truth[k]))
        base = truth[int(rng.integers(len(truth)))]
        for name in rng.choice(sorted(CORRUPTIONS), size=2, replace=False):
            out.append((str(name), CORRUPTIONS[str(name)](base, rng)))
        pool = [m for m in truth + others if m is not base]
        if pool and rng.random() < 0.5:
            out.append(("merged", base | pool[int(rng.integers(len(pool)))]))
    if others:
        for k in rng.permutation(len(others))[: 1 if truth else 2]:
            out.append(("other_concept", others[k]))
    if rng.random() < 0.1:
        out.append(("whole_image", np.ones((pair["height"], pair["width"]), dtype=bool)))
    return [(o, m) for o, m in out if m.sum() >= MIN_PIXELS]


def _ev_candidates(truth: list[str], others: list[str], rng) -> list[tuple[str, list[str]]]:
    """(origin, masks shown) candidates for one pair."""
    if not truth:
        out = [("none", [])]
        if others and rng.random() < 0.5:
            k = int(rng.integers(1, min(3, len(others)) + 1))
            out.append(("spurious", [others[i] for i in rng.permutation(len(others))[:k]]))
        return out
    out = [("all", list(truth))]
    variant = rng.choice(["some", "none", "extra"], p=[0.45, 0.3, 0.25])
    if variant == "some":
        keep = rng.permutation(len(truth))[: int(rng.integers(0, len(truth)))]
        out.append(("some", [truth[i] for i in sorted(keep)]))
    elif variant == "none":
        out.append(("none", []))
    elif others:
        out.append(("extra", list(truth) + [others[int(rng.integers(len(others)))]]))
    return out


def _pairs(
    world_dir: str | Path, split: str, seed: int, nps_per_image: int, negative_share: float
) -> tuple[Oracle, _Labeller, list[dict]]:
    """The world's oracle, an error-free labeller and the SA-Co-like pairs of `split` (grouped by image)."""
    oracle = Oracle(world_dir)
    pairs = oracle.gold_annotations(
        split, nps_per_image=nps_per_image, negative_share=negative_share, seed=seed
    )
    return oracle, _Labeller(world_dir), pairs.to_pylist()


def oracle_examples(
    world_dir: str | Path,
    split: str = "train",
    seed: int = 0,
    nps_per_image: int = 8,
    negative_share: float = NEGATIVE_SHARE,
    tasks: tuple[str, ...] = ("mv", "ev"),
) -> pa.Table:
    """MV and EV examples for every image of the world's `split`, labelled by an error-free simulated
    reviewer."""
    oracle, label, pairs = _pairs(world_dir, split, seed, nps_per_image, negative_share)
    rows = []
    for pair in pairs:
        h, w = pair["height"], pair["width"]
        truth_rles = [m["rle"] for m in pair["masks"]]
        record = oracle.world.record(pair["media_id"])
        other_rles = [i["rle"] for i in record["instances"] if i["rle"] not in set(truth_rles)]
        rng = np.random.default_rng(ids.stable_seed(seed, "verifier-examples", pair["pair_id"]))
        if "mv" in tasks:
            truth = [rle.decode(c, h, w) for c in truth_rles]
            others = [rle.decode(c, h, w) for c in other_rles]
            for origin, mask in _mv_candidates(pair, truth, others, rng):
                counts = rle.encode(mask)
                rows.append(_row(pair, "mv", [counts], label("mv", pair, [counts]), origin))
        if "ev" in tasks:
            for origin, shown in _ev_candidates(truth_rles, other_rles, rng):
                rows.append(_row(pair, "ev", shown, label("ev", pair, shown), origin))
    return pa.Table.from_pylist(rows, schema=EXAMPLES)


#: `propose(image, noun_phrases)` -> for each NP, the RLE counts of the masks a mask proposer returns.
Proposer = Callable[[np.ndarray, list[str]], list[list[str]]]


def proposal_examples(
    world_dir: str | Path,
    propose: Proposer,
    split: str = "train",
    seed: int = 0,
    nps_per_image: int = 8,
) -> pa.Table:
    """MV and EV examples of what a real proposer (the demo's SAM 3) returns for the world's pairs,
    labelled by an error-free simulated reviewer: one MV example per mask, and one EV example per pair
    showing the masks that reviewer accepts (EV decides a pair once MV has judged its masks; routing.py).
    Its mistakes are not the oracle corruptions above: masks merging two objects, covering part of one,
    duplicating another, answering a broad phrase with a sibling, and pairs with no mask at all where the
    phrase is present. A verifier that only saw corruptions misjudges them in the demo's rounds."""
    _, label, pairs = _pairs(world_dir, split, seed, nps_per_image, NEGATIVE_SHARE)
    rows: list[dict] = []
    for _, same_image in groupby(pairs, key=lambda p: p["media_id"]):  # one proposer call per image
        group = list(same_image)
        proposals = propose(load_rgb(group[0]["uri"]), [p["noun_phrase"] for p in group])
        for pair, masks in zip(group, proposals, strict=True):
            verdicts = [label("mv", pair, [counts]) for counts in masks]
            rows += [_row(pair, "mv", [m], v, "proposer") for m, v in zip(masks, verdicts, strict=True)]
            kept = [m for m, v in zip(masks, verdicts, strict=True) if v == ACCEPT]
            rows.append(_row(pair, "ev", kept, label("ev", pair, kept), "proposer"))
    return pa.Table.from_pylist(rows, schema=EXAMPLES)


def _objects(world, media_id: str, h: int, w: int) -> list[tuple[dict[str, str], str, np.ndarray]]:  # type: ignore[no-untyped-def]
    """The image's rendered instances: (slot values, RLE, decoded mask)."""
    return [
        (
            {"leaf": i["leaf"], "colour": i["colour"], "pattern": i["pattern"]},
            i["rle"],
            rle.decode(i["rle"], h, w),
        )
        for i in world.record(media_id)["instances"]
    ]


def mv_slot_labels(
    world_dir: str | Path, rows: list[dict], min_iou: float = 0.5
) -> list[dict[str, str] | None]:
    """For each MV example, the leaf and attributes of the rendered instance its mask covers (IoU >=
    `min_iou`), or None when it covers none well (a shifted, merged or whole-image mask)."""
    world = Oracle(world_dir).world
    out: list[dict[str, str] | None] = []
    decoded: dict[str, list[tuple[dict[str, str], str, np.ndarray]]] = {}  # one image's, decoded once
    for r in rows:
        h, w = r["height"], r["width"]
        mask = rle.decode(r["masks"][0]["rle"], h, w)
        if r["media_id"] not in decoded:
            decoded = {r["media_id"]: _objects(world, r["media_id"], h, w)}
        best, label = 0.0, None
        for slots, _, other in decoded[r["media_id"]]:
            union = int((mask | other).sum())
            iou = int((mask & other).sum()) / union if union else 0.0
            if iou > best:
                best, label = iou, slots
        out.append(label if best >= min_iou else None)
    return out


def ev_scene_objects(world_dir: str | Path, rows: list[dict]) -> list[list[SceneObject]]:
    """For each EV example, every rendered object of its image: box, slot values, and whether one of the
    shown masks matches it (one to one at the simulated reviewer's IoU bar)."""
    world = Oracle(world_dir).world
    out: list[list[SceneObject]] = []
    scene: dict[str, list[tuple[dict[str, str], str, tuple[float, float, float, float]]]] = {}
    for r in rows:
        h, w = r["height"], r["width"]
        if r["media_id"] not in scene:
            scene = {r["media_id"]: [
                ({"leaf": i["leaf"], "colour": i["colour"], "pattern": i["pattern"]}, i["rle"],
                 tuple(float(v) / d for v, d in zip(rle.box_xyxy(i["rle"], h, w), (w, h, w, h), strict=True)))
                for i in world.record(r["media_id"])["instances"]
            ]}  # fmt: skip
        objects = scene[r["media_id"]]
        boxed = {
            t for _, t in match([m["rle"] for m in r["masks"]], [o[1] for o in objects], h, w, IOU_MATCH)
        }
        out.append([SceneObject(box, slots, k in boxed) for k, (slots, _, box) in enumerate(objects)])
    return out


def scene_foreground(world_dir: str | Path) -> Callable[[dict], np.ndarray]:
    """row -> (H, W) bool: the union of the masks of every rendered object of the row's image (what an EV
    scorer with `silhouette` learns to see)."""
    world = Oracle(world_dir).world

    def foreground(row: dict) -> np.ndarray:
        h, w = row["height"], row["width"]
        out = np.zeros((h, w), dtype=bool)
        for instance in world.record(row["media_id"])["instances"]:
            out |= rle.decode(instance["rle"], h, w).astype(bool)
        return out

    return foreground


# -- the grounded scorers' training data (verifiers/grounded) --------------------------------------------
#: EV items whose boxes are the phrase's own instances (all, some or none of them): the reviewers' EV question,
#: asked once MV has judged every box (a box of another object is MV's to reject). The proposer's EV items
#: show only the masks the reviewer accepts, so they are of this kind too.
GROUNDED_EV_ORIGINS = ("all", "some", "none")


def _of_task(table: pa.Table | None, task: str) -> list[dict]:
    return [] if table is None else table.filter(pc.equal(table["task"], task)).to_pylist()


def grounded_mv_examples(
    world_dir: str | Path, seed: int, slots: list[list], proposed: pa.Table | None = None
) -> tuple[list[dict], MVData]:
    """MV examples of the world's train split with each judged object's slot values (None where the mask
    covers no object well) and what each phrase accepts (slots.phrase_needs); the rows carry the values as
    `object`. `proposed` (proposal_examples of the same
    split) adds the proposer's own masks to the oracle's corruptions."""
    rows = oracle_examples(world_dir, split="train", seed=seed, tasks=("mv",)).to_pylist()
    rows += _of_task(proposed, "mv")
    labels = mv_slot_labels(world_dir, rows)
    for r, lab in zip(rows, labels, strict=True):
        r["object"] = lab
    needs = partial(phrase_needs, World.load(world_dir).graph, slots=slots)
    return rows, prepare_mv(rows, load_rgb, slots, labels, needs=needs)


def grounded_ev_examples(
    world_dir: str | Path,
    seed: int,
    slots: list[list],
    image_size: int,
    grid: int,
    proposed: pa.Table | None = None,
) -> tuple[list[dict], EVData]:
    """EV examples of the world's train split (GROUNDED_EV_ORIGINS) with their dense targets and what each
    phrase accepts (slots.phrase_needs) and each image's foreground (scene_foreground); `proposed`
    (proposal_examples of the same split) adds one per pair showing the proposer's accepted masks."""
    rows = oracle_examples(world_dir, split="train", seed=seed, tasks=("ev",)).to_pylist()
    rows = [r for r in rows if r["origin"] in GROUNDED_EV_ORIGINS] + _of_task(proposed, "ev")
    needs = partial(phrase_needs, World.load(world_dir).graph, slots=slots)
    objects = ev_scene_objects(world_dir, rows)
    fg = scene_foreground(world_dir)
    return rows, prepare_ev(rows, load_rgb, slots, objects, image_size, grid, needs, fg)
