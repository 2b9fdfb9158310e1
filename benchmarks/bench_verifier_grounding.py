"""Do the verifiers look at the image? The grounded MV and EV scorers on held-out rendered items.

What it does:
1. renders a training world and a separately seeded test world (the demo's style, `--train-images` and
   `--test-images` images) and makes MV examples on both as the demo does (sim/verifier_examples.oracle_examples:
   ground-truth masks, the proposer's typical mistakes, masks of other concepts), answered by an
   error-free simulated reviewer;
2. trains the grounded MV scorer (conceptengine/verifiers/grounded) for `--steps` batches on one side;
3. on the test world reports ROC AUC of P(Accept) overall and per kind of decision: every accepted item
   against the refused items of one kind: `mask_quality` (a shifted, cut, bloated, box, merged or
   whole-image mask), `leaf_shape` (the phrase names another leaf of the object's family), `family` (another
   family), `colour`, `pattern`; the image-swap test (mean |dP(Accept)| when the crops' pixels come from
   another image, masks kept; also per answer, since a refused item moves little); and agreement with the
   simulated reviewers per choice;
4. the same for the grounded EV scorer (`--ev-steps` batches) on EV items whose boxes are the phrase's own
   instances, all, some or none of them: the reviewers' EV question, asked once MV has judged each box (a box
   of another object is MV's to reject). Kinds: `missed_some` (some boxed,
   one or more not), `missed_all` (none boxed), both together `missed_instance`; the swap replaces the
   image under the boxes; and each half alone (`ev_candidate_recall`: unboxed objects among the detector's
   candidates; `ev_judge_accuracy`: slot values the judge gives the objects' crops).

The shipped EV is the region EV (verifiers/grounded/region_ev.py: the EV detector's foreground split into
objects, each judged by MV's slot heads); trained here, the EV is the peak-and-judge scorer, and with MV
trained in the same run the region EV composed of the two is reported too (`ev_region_*`, no halves).

`--tasks mv` or `--tasks ev` runs one half. `--scorers DIR` scores the checkpoints saved in DIR/mv and DIR/ev
(e.g. the shipped conceptengine/assets/verifier-grounded, trained by scripts/train_demo_grounded_verifiers.py)
instead of training them: only the test world is rendered. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from conceptengine.sim.render import STYLES
from conceptengine.sim.taxonomy import shapes_graph
from conceptengine.sim.verifier_examples import grounded_ev_examples, grounded_mv_examples
from conceptengine.sim.world import build_world
from conceptengine.verifiers.choices import EV, MV
from conceptengine.verifiers.grounded import ev_train, scorer_tasks
from conceptengine.verifiers.grounded.backend import load_scorer
from conceptengine.verifiers.grounded.crops import rgb_channels
from conceptengine.verifiers.grounded.ev_model import GroundedEVConfig, GroundedEVModel
from conceptengine.verifiers.grounded.model import GroundedMVConfig, GroundedMVModel
from conceptengine.verifiers.grounded.phrases import PhraseEmbedder
from conceptengine.verifiers.grounded.region_ev import RegionEVModel
from conceptengine.verifiers.grounded.slots import ontology_slots
from conceptengine.verifiers.grounded.train import MVData, accept_probs, train
from conceptengine.verifiers.train_metrics import auroc

TRAIN_SEED, TEST_SEED = 101, 202
MASK_MISTAKES = ("shifted", "cut", "dilated", "box", "merged", "whole_image")


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-images", type=int, default=1200)
    ap.add_argument("--test-images", type=int, default=200)
    ap.add_argument("--steps", type=int, default=3000, help="training batches of --batch-size")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--ev-steps", type=int, default=1500, help="EV training batches of --ev-batch-size")
    ap.add_argument("--ev-batch-size", type=int, default=32)
    ap.add_argument(
        "--tasks",
        type=scorer_tasks,
        default="mv,ev",
        help="which scorers to train and report: mv, ev or both",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--workdir", default=None, help="where the worlds go (default: a temp dir)")
    ap.add_argument(
        "--save", default=None, help="save the trained scorers here, in mv/ and ev/ (save_pretrained)"
    )
    ap.add_argument(
        "--scorers",
        default=None,
        help="score the scorers saved in DIR/mv and DIR/ev (e.g. conceptengine/assets/verifier-grounded) "
        "instead of training them",
    )
    args = ap.parse_args(argv)
    sizes = (
        args.train_images,
        args.test_images,
        args.steps,
        args.batch_size,
        args.ev_steps,
        args.ev_batch_size,
    )
    if min(sizes) < 1:
        ap.error(
            "--train-images, --test-images, --steps, --batch-size, --ev-steps and --ev-batch-size must be positive"
        )
    return args


def render(root: Path, n_images: int, seed: int) -> Path:
    world = root / f"world-{seed}"
    build_world(world, n_images, 0, seed=seed, image_size=192, style=STYLES["demo"])
    return world


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
    """The crops with their pixels taken from an example of another image (the mask channels kept)."""
    media = np.array([r["media_id"] for r in rows])
    out = data.pixels.clone()
    for shift in range(len(rows) // 2, len(rows)):
        donor = np.roll(np.arange(len(rows)), shift)
        if not np.any(media == media[donor]):
            rgb = rgb_channels(out.shape[1])
            out[:, rgb] = data.pixels[donor][:, rgb]
            return out
    raise ValueError("the image-swap test needs examples from at least two images")


def report(model, test_rows, test, embedder, graph) -> dict:  # type: ignore[no-untyped-def]
    p = accept_probs(model, test, embedder)
    kinds = [decision_kind(r, graph) for r in test_rows]
    swap = accept_probs(model, test, embedder, pixels=swapped(test, test_rows))
    return {f"mv_{k}": v for k, v in _figures(test_rows, kinds, p, swap, MV).items()}


def ev_kind(row: dict) -> str | None:
    if row["choice"] == "Accept":
        return None
    return "missed_some" if row["masks"] else "missed_all"


def ev_report(model, test_rows, test, embedder, prefix: str = "ev") -> dict:  # type: ignore[no-untyped-def]
    p = ev_train.accept_probs(model, test, embedder)
    kinds = [ev_kind(r) for r in test_rows]
    donors = torch.roll(torch.arange(len(test.images)), len(test.images) // 2)  # every image another's
    swap = ev_train.accept_probs(model, test, embedder, images=test.images[donors])
    figures = _figures(test_rows, kinds, p, swap, EV)
    if isinstance(model, GroundedEVModel):  # the peak-and-judge EV's halves (the region EV has none)
        figures |= ev_train.halves(model, test)
    refused = np.array([k is not None for k in kinds])
    accepted = ~refused
    figures["auc_per_kind"]["missed_instance"] = {
        "auc": _round(auroc(p, accepted)),
        "refused": int(refused.sum()),
    }
    return {f"{prefix}_{k}": v for k, v in figures.items()}


def _figures(rows: list[dict], kinds: list[str | None], p: np.ndarray, swap: np.ndarray, choices) -> dict:  # type: ignore[no-untyped-def]
    """AUC overall and per kind (the accepted items against one kind of refused ones), image swap, and
    agreement with the reviewers per choice (the demo's reviewers answer Accept or Reject)."""
    accepted = np.array([r["choice"] == "Accept" for r in rows])
    kind_of = np.array([k or "" for k in kinds])
    per_kind = {}
    for kind in sorted(set(kind_of) - {""}):
        sel = accepted | (kind_of == kind)
        per_kind[kind] = {
            "auc": _round(auroc(p[sel], accepted[sel])),
            "refused": int((kind_of == kind).sum()),
        }
    per_answer = {
        answer: _round(float(np.abs(p - swap)[sel].mean()))
        for answer, sel in (("Accept", accepted), ("refused", ~accepted))
        if sel.any()
    }
    chosen = np.array(["Accept" if q >= 0.5 else "Reject" for q in p])
    truth = np.array([r["choice"] for r in rows])
    return {
        "auc": _round(auroc(p, accepted)),
        "auc_per_kind": per_kind,
        "image_swap": _round(float(np.abs(p - swap).mean())),
        # per answer too: the overall mean is bounded by the share of accepted items (a refused item that
        # stays refused on another picture moves little), so it depends on the test set's mix
        "image_swap_per_answer": per_answer,
        # the per-answer means averaged: what the mean would be on a test set with as many accepted items
        # as refused ones, whatever this one's mix
        "image_swap_balanced": _round(float(np.mean(list(per_answer.values())))),
        "agreement_per_choice": {
            c: _round(float((chosen[truth == c] == c).mean())) for c in choices.names if (truth == c).any()
        },
        "test_items": len(rows),
        "test_accepted": int(accepted.sum()),
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def _progress(
    name: str, curve: list[dict], score: Callable[[], float | None]
) -> Callable[[int, float], None]:
    def on_epoch(step: int, seconds: float) -> None:
        auc = score()
        curve.append({"step": step, "minutes": round(seconds / 60, 2), f"{name}_auc": _round(auc)})
        print(f"{name} step {step} ({seconds / 60:.1f} min): test AUC {auc}", file=sys.stderr, flush=True)

    return on_epoch


def train_mv(args, worlds: dict[int, Path], slots, graph, embedder) -> dict:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    train_rows, train_data = grounded_mv_examples(worlds[TRAIN_SEED], TRAIN_SEED, slots)
    test_rows, test_data = grounded_mv_examples(worlds[TEST_SEED], TEST_SEED, slots)
    prep_s = time.perf_counter() - t0
    model = GroundedMVModel(GroundedMVConfig(slots=slots))
    accepted = np.array([r["choice"] == "Accept" for r in test_rows])
    curve: list[dict] = []

    def score() -> float | None:
        auc = auroc(accept_probs(model, test_data, embedder), accepted)
        model.train()
        return auc

    on_epoch = _progress("mv", curve, score)
    trained = train(model, train_data, embedder, args.steps, batch_size=args.batch_size, on_epoch=on_epoch)
    if args.save:
        model.save_pretrained(Path(args.save) / "mv")
    figures = report(model, test_rows, test_data, embedder, graph)
    return {"mv_train_items": len(train_rows), "mv_prepare_s": round(prep_s, 1), "mv_train": trained,
            **figures, "mv_curve": curve}, model  # fmt: skip


def saved_mv(args, worlds: dict[int, Path], graph, embedder) -> dict:  # type: ignore[no-untyped-def]
    path = Path(args.scorers) / "mv"
    model = GroundedMVModel.from_pretrained(path).eval()
    test_rows, test_data = grounded_mv_examples(worlds[TEST_SEED], TEST_SEED, model.config.slots)
    return {"mv_scorer": str(path)} | report(model, test_rows, test_data, embedder, graph)


def train_ev(args, worlds: dict[int, Path], slots, embedder, judge=None) -> dict:  # type: ignore[no-untyped-def]
    config = GroundedEVConfig(slots=slots, silhouette=True, centre_offsets=True)
    t0 = time.perf_counter()
    train_rows, train_data = grounded_ev_examples(
        worlds[TRAIN_SEED], TRAIN_SEED, slots, config.image_size, config.grid
    )
    test_rows, test_data = grounded_ev_examples(
        worlds[TEST_SEED], TEST_SEED, slots, config.image_size, config.grid
    )
    prep_s = time.perf_counter() - t0
    model = GroundedEVModel(config)
    accepted = np.array([r["choice"] == "Accept" for r in test_rows])
    curve: list[dict] = []

    def score() -> float | None:
        auc = auroc(ev_train.accept_probs(model, test_data, embedder), accepted)
        model.train()
        return auc

    on_epoch = _progress("ev", curve, score)
    trained = ev_train.train(
        model, train_data, embedder, args.ev_steps, batch_size=args.ev_batch_size, on_epoch=on_epoch
    )
    if args.save:
        model.save_pretrained(Path(args.save) / "ev")
    figures = ev_report(model, test_rows, test_data, embedder)
    if judge is not None:  # the region EV made of this finder and the MV trained beside it
        region = RegionEVModel.from_parts(model, judge)
        if args.save:
            region.save_pretrained(Path(args.save) / "ev-region")
        figures |= ev_report(region, test_rows, test_data, embedder, prefix="ev_region")
    return {"ev_train_items": len(train_rows), "ev_prepare_s": round(prep_s, 1), "ev_train": trained,
            **figures, "ev_curve": curve}  # fmt: skip


def saved_ev(args, worlds: dict[int, Path], embedder) -> dict:  # type: ignore[no-untyped-def]
    path = Path(args.scorers) / "ev"
    model = load_scorer(str(path)).eval()
    c = model.config
    test_rows, test_data = grounded_ev_examples(worlds[TEST_SEED], TEST_SEED, c.slots, c.image_size, c.grid)
    return {"ev_scorer": str(path)} | ev_report(model, test_rows, test_data, embedder)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    graph = shapes_graph()
    slots = ontology_slots(graph)
    embedder = PhraseEmbedder()
    figures: dict = {"threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        t0 = time.perf_counter()
        sizes = [(TEST_SEED, args.test_images)]
        if not args.scorers:
            sizes.insert(0, (TRAIN_SEED, args.train_images))
        worlds = {seed: render(root, n, seed) for seed, n in sizes}
        figures["render_s"] = round(time.perf_counter() - t0, 1)
        judge = None  # an MV trained here judges the region EV composed from the EV trained here
        if "mv" in args.tasks:
            if args.scorers:
                figures |= saved_mv(args, worlds, graph, embedder)
            else:
                mv_figures, judge = train_mv(args, worlds, slots, graph, embedder)
                figures |= mv_figures
        if "ev" in args.tasks:
            ev = saved_ev(args, worlds, embedder) if args.scorers else None
            figures |= ev or train_ev(args, worlds, slots, embedder, judge)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
