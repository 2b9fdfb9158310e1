"""Does the mask verifier look at the image? The grounded MV scorer on held-out rendered items.

What it does:
1. renders a training world and a separately seeded test world (the demo's style, `--train-images` and
   `--test-images` images) and makes MV examples on both as the demo does (train_data_sim.oracle_examples:
   ground-truth masks, the proposer's typical mistakes, masks of other concepts), answered by an
   error-free simulated reviewer;
2. trains the grounded MV scorer (conceptengine/verifiers/grounded) for `--steps` batches on one side;
3. on the test world reports ROC AUC of P(Accept) overall and per kind of decision: every accepted item
   against the refused items of one kind: `mask_quality` (a shifted, cut, bloated, box, merged or
   whole-image mask), `leaf_shape` (the phrase names another leaf of the object's family), `family` (another
   family), `colour`, `pattern`; the image-swap test (mean |dP(Accept)| when the crop's pixels come from
   another image, mask kept); and agreement with the simulated reviewers per choice.

EV is not scored yet (issue 12): no grounded EV exists. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from conceptengine.sim.render import STYLES
from conceptengine.sim.taxonomy import shapes_graph
from conceptengine.sim.world import build_world
from conceptengine.verifiers.choices import MV
from conceptengine.verifiers.grounded.model import GroundedMVConfig, GroundedMVModel
from conceptengine.verifiers.grounded.phrases import PhraseEmbedder, default_text_model
from conceptengine.verifiers.grounded.train import MVData, accept_probs, prepare, roc_auc, train
from conceptengine.verifiers.train_data_sim import mv_slot_labels, ontology_slots, oracle_examples

TRAIN_SEED, TEST_SEED = 101, 202
MASK_MISTAKES = ("shifted", "cut", "dilated", "box", "merged", "whole_image")


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-images", type=int, default=600)
    ap.add_argument("--test-images", type=int, default=200)
    ap.add_argument("--steps", type=int, default=1500, help="training batches of --batch-size")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--workdir", default=None, help="where the worlds go (default: a temp dir)")
    ap.add_argument("--save", default=None, help="save the trained scorer here (save_pretrained)")
    args = ap.parse_args(argv)
    if min(args.train_images, args.test_images, args.steps, args.batch_size) < 1:
        ap.error("--train-images, --test-images, --steps and --batch-size must be positive")
    return args


def _read(uri: str) -> np.ndarray:
    return np.asarray(Image.open(uri.removeprefix("file://")).convert("RGB"))


def examples(root: Path, n_images: int, seed: int, slots: list[list]) -> tuple[list[dict], MVData]:
    world = root / f"world-{seed}"
    build_world(world, n_images, 0, seed=seed, image_size=192, style=STYLES["demo"])
    rows = oracle_examples(world, split="train", seed=seed, tasks=("mv",)).to_pylist()
    labels = mv_slot_labels(world, rows)
    for r, lab in zip(rows, labels, strict=True):
        r["object"] = lab
    return rows, prepare(rows, _read, slots, labels)


def decision_kind(row: dict, graph) -> str | None:  # type: ignore[no-untyped-def]
    """What a refused MV item tests, from how it was made and what its phrase names (None: accepted)."""
    if row["choice"] == "Accept":
        return None
    if row["origin"] in MASK_MISTAKES:
        return "mask_quality"
    obj, parsed = row["object"], graph.resolve(row["noun_phrase"])
    if obj is None or parsed is None:
        return "other"
    if not graph.is_a(obj["leaf"], parsed.node_id):
        family = graph.ancestors(obj["leaf"])[-2]  # the root's child above the leaf: polygon, symbol...
        named = {parsed.node_id, *graph.ancestors(parsed.node_id)}
        return "leaf_shape" if family in named else "family"
    for kind in ("colour", "pattern"):
        if parsed.get(kind) not in (None, obj[kind]):
            return kind
    return "other"


def swapped(data: MVData, rows: list[dict]) -> torch.Tensor:
    """The crops with their pixels taken from an example of another image (the mask channel kept)."""
    media = np.array([r["media_id"] for r in rows])
    out = data.pixels.clone()
    for shift in range(len(rows) // 2, len(rows)):
        donor = np.roll(np.arange(len(rows)), shift)
        if not np.any(media == media[donor]):
            out[:, :3] = data.pixels[donor, :3]
            return out
    raise ValueError("the image-swap test needs examples from at least two images")


def report(model, test_rows, test, embedder, graph) -> dict:  # type: ignore[no-untyped-def]
    p = accept_probs(model, test, embedder)
    accepted = np.array([r["choice"] == "Accept" for r in test_rows])
    kinds = np.array([decision_kind(r, graph) or "" for r in test_rows])
    per_kind = {}
    for kind in sorted(set(kinds) - {""}):
        sel = accepted | (kinds == kind)
        per_kind[kind] = {
            "auc": _round(roc_auc(accepted[sel], p[sel])),
            "refused": int((kinds == kind).sum()),
        }
    swap = accept_probs(model, test, embedder, pixels=swapped(test, test_rows))
    chosen = np.array([MV.names[0] if q >= 0.5 else MV.names[-1] for q in p])  # the demo answers these two
    truth = np.array([r["choice"] for r in test_rows])
    agreement = {c: _round(float((chosen[truth == c] == c).mean())) for c in MV.names if (truth == c).any()}
    return {
        "mv_auc": _round(roc_auc(accepted, p)),
        "mv_auc_per_kind": per_kind,
        "mv_image_swap": _round(float(np.abs(p - swap).mean())),
        "mv_agreement_per_choice": agreement,
        "test_items": len(test_rows),
        "test_accepted": int(accepted.sum()),
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    graph = shapes_graph()
    slots = ontology_slots(graph)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        t0 = time.perf_counter()
        train_rows, train_data = examples(root, args.train_images, TRAIN_SEED, slots)
        test_rows, test_data = examples(root, args.test_images, TEST_SEED, slots)
        prep_s = time.perf_counter() - t0
    embedder = PhraseEmbedder()
    model = GroundedMVModel(GroundedMVConfig(slots=slots, text_model=default_text_model()))
    curve = []

    def on_epoch(step: int, seconds: float) -> None:
        auc = roc_auc(
            np.array([r["choice"] == "Accept" for r in test_rows]), accept_probs(model, test_data, embedder)
        )
        curve.append({"step": step, "minutes": round(seconds / 60, 2), "mv_auc": _round(auc)})
        model.train()
        print(f"step {step} ({seconds / 60:.1f} min): test MV AUC {auc:.3f}", file=sys.stderr, flush=True)

    trained = train(model, train_data, embedder, args.steps, batch_size=args.batch_size, on_epoch=on_epoch)
    if args.save:
        model.save_pretrained(args.save)
    figures = {
        "train_items": len(train_rows),
        "prepare_s": round(prep_s, 1),
        "train": trained,
        "threads": torch.get_num_threads(),
        **report(model, test_rows, test_data, embedder, graph),
        "curve": curve,
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
