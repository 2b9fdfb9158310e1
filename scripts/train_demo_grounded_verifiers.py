"""Train the grounded MV and EV scorers for the demo (conceptengine/assets/verifier-grounded/mv/ and .../ev/).

`python scripts/train_demo_grounded_verifiers.py` (fixed seeds; both CPU threads by default). It:
1. renders a training world (seed WORLD_SEED, not the demo's seed 0) and a separately seeded test world, in
   the demo's scene style and share of the shifted look: a RENDERED domain of procedural shapes, not real
   images;
2. makes MV and EV examples on both (sim/verifier_examples.py), answered by an error-free simulated
   reviewer, with the targets the world knows (objects' slot values, unboxed objects, what each phrase
   accepts): the oracle's mask mistakes plus what the demo's SAM 3 proposes for the pairs (`--proposer`),
   which is what the verifiers judge in the demo's rounds;
3. trains each scorer (verifiers/grounded) and scores it on the test world after every pass;
4. writes metrics.json next to each checkpoint (agreement with the reviewers, ROC AUC of P(Accept), the
   curve; for EV each half alone) and copies the checkpoints into the package.

The demo's EV is the region EV: train the EV here with `--ev-silhouette --ev-centre-offsets --out W`, then
`python scripts/compose_region_ev.py --finder W/ev` makes it of that EV's finder and the shipped MV
(the finder the shipped one was made of is training/grounded-ev-finder/).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from conceptengine.verifiers.grounded import scorer_tasks

log = logging.getLogger("train_demo_grounded_verifiers")
WORLD_SEED, TEST_SEED = 20251, 20252
REPO = Path(__file__).resolve().parents[1]
ASSET_DIR = REPO / "conceptengine" / "assets" / "verifier-grounded"
SHIPPED = ("config.json", "model.safetensors", "metrics.json")
SHIPPED_SAM3 = REPO / "conceptengine" / "assets" / "sam3-demo"


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/grounded-verifier-work", help="scratch directory (the worlds)")
    ap.add_argument("--out", default=str(ASSET_DIR), help="where the shipped mv/ and ev/ checkpoints go")
    ap.add_argument("--n-train", type=int, default=1200, help="rendered training images")
    ap.add_argument("--n-test", type=int, default=200, help="rendered test images (another seed)")
    ap.add_argument("--steps-mv", type=int, default=3000)
    ap.add_argument("--steps-ev", type=int, default=1500)
    ap.add_argument("--batch-mv", type=int, default=128)
    ap.add_argument("--batch-ev", type=int, default=32)
    ap.add_argument(
        "--judge-steps-ev",
        type=int,
        default=600,
        help="batches of 256 object crops that teach the EV judge its slots before the whole scorer trains",
    )
    ap.add_argument(
        "--fg-steps-ev",
        type=int,
        default=300,
        help="with --ev-silhouette: batches of 32 images that teach the EV foreground before its judge trains",
    )
    ap.add_argument(
        "--ev-silhouette",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the EV judge also sees the foreground its dense head predicts (GroundedEVConfig.silhouette)",
    )
    ap.add_argument(
        "--ev-centre-offsets",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="EV places each candidate where its object's centre lies in the cell (GroundedEVConfig.centre_offsets)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--proposer",
        default=str(SHIPPED_SAM3),
        help="SAM 3 checkpoint whose proposals become MV and EV examples too ('none': the oracle's only)",
    )
    ap.add_argument(
        "--tasks", type=scorer_tasks, default="mv,ev", help="which scorers to train: mv, ev or both"
    )
    args = ap.parse_args(argv)
    if min(args.n_train, args.n_test, args.steps_mv, args.steps_ev, args.batch_mv, args.batch_ev) < 1:
        ap.error("image counts, steps and batch sizes must be positive")
    if min(args.judge_steps_ev, args.fg_steps_ev) < 0:
        ap.error("--judge-steps-ev and --fg-steps-ev must be 0 or more")
    return args


def sam3_proposer(path: str, sam3):  # type: ignore[no-untyped-def]
    """`propose(image, phrases)` with the SAM 3 checkpoint at `path`, at the demo's threshold and mask cap."""
    from conceptengine.model.sam3_backend import Sam3Detector

    detector = Sam3Detector.from_pretrained(path)

    def propose(image: np.ndarray, phrases: list[str]) -> list[list[str]]:
        found = detector.detect(image, phrases, sam3.score_threshold, max_instances=sam3.max_masks)
        return [d.masks for d in found]

    return propose


def train_ev(model, data, embedder, steps, judge_steps: int, fg_steps: int, **kw) -> dict:  # type: ignore[no-untyped-def]
    """With `silhouette`, the detector's foreground first (ev_train.train_foreground); then the EV judge alone
    on object crops (ev_train.train_judge), reading that foreground; then the whole scorer."""
    from conceptengine.verifiers.grounded import ev_train

    foreground = fg = None
    if model.config.silhouette and fg_steps:
        foreground = ev_train.train_foreground(model, data, fg_steps)
        fg = ev_train.predicted_foreground(model, data)
    judge = ev_train.train_judge(model, data, judge_steps, foreground=fg) if judge_steps else None
    trained = ev_train.train(model, data, embedder, steps, **kw)
    return trained | {"judge": judge, "foreground": foreground}


def train_one(args, task, model, examples, fit, steps, batch, worlds, embedder, sim) -> None:  # type: ignore[no-untyped-def]
    """Train one scorer, score it on the test world after every pass, save it with its metrics.json."""
    from conceptengine.training.grounded_finetune import choice_probs
    from conceptengine.verifiers.grounded import ev_train
    from conceptengine.verifiers.train_data import TASKS
    from conceptengine.verifiers.train_metrics import agreement_metrics, auroc

    started = time.time()
    _, data = examples(worlds["train"], WORLD_SEED)
    test_rows, test = examples(worlds["test"], TEST_SEED)
    human = [r["choice"] for r in test_rows]
    accepted = np.array([h == "Accept" for h in human], dtype=float)
    curve: list[dict] = []

    proposed = np.array([r["origin"] == "proposer" for r in test_rows])

    def by_source(p_accept: np.ndarray) -> dict:
        # The proposer's masks are what the demo's verifiers judge; the oracle's mistakes are easier.
        return {
            "proposer": auroc(p_accept[proposed], accepted[proposed]) if proposed.any() else None,
            "oracle": auroc(p_accept[~proposed], accepted[~proposed]),
        }

    def on_epoch(step: int, seconds: float) -> None:
        p_accept = choice_probs(model, test, embedder)[:, 0]
        auc = auroc(p_accept, accepted)
        curve.append({"step": step, "minutes": round(seconds / 60, 2), "auroc_p_accept": auc}
                     | {f"auroc_{k}": v for k, v in by_source(p_accept).items()})  # fmt: skip
        model.train()
        log.info("%s: %s", task, curve[-1])

    trained = fit(model, data, embedder, steps, batch_size=batch, on_epoch=on_epoch)
    world = {"train": [WORLD_SEED, args.n_train], "test": [TEST_SEED, args.n_test], "style": sim.style}
    probs = choice_probs(model, test, embedder)
    metrics = {
        "test": agreement_metrics(probs, human, TASKS[task]),
        "auroc_p_accept_by_source": by_source(probs[:, 0]),
        "curve": curve,
        "training": trained | {"examples": len(data), "wall_seconds": round(time.time() - started)},
        "threads": args.threads,
        "worlds": world | {"image_size": sim.image_size, "shifted_share": sim.shifted_share},
        "proposer": None if args.proposer == "none" else Path(args.proposer).name,
        "note": "RENDERED domain (procedural shapes). Re-create: python scripts/train_demo_grounded_verifiers.py",
    }
    if task == "ev":
        metrics["halves"] = ev_train.halves(model, test)
    target = Path(args.out) / task
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target)
    (target / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info(
        "%s: test AUC %s in %.0fs -> %s",
        task,
        metrics["test"]["auroc_p_accept"],
        time.time() - started,
        target,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)

    from conceptengine.config import EngineConfig
    from conceptengine.sim.render import STYLES
    from conceptengine.sim.verifier_examples import (
        grounded_ev_examples,
        grounded_mv_examples,
        proposal_examples,
    )
    from conceptengine.sim.world import build_world
    from conceptengine.verifiers.grounded import train
    from conceptengine.verifiers.grounded.ev_model import GroundedEVConfig, GroundedEVModel
    from conceptengine.verifiers.grounded.model import GroundedMVConfig, GroundedMVModel
    from conceptengine.verifiers.grounded.phrases import PhraseEmbedder
    from conceptengine.verifiers.grounded.slots import ontology_slots

    config = EngineConfig()
    t0, work, sim = time.time(), Path(args.work), config.media.sim
    worlds = {}
    for name, seed, n in (("train", WORLD_SEED, args.n_train), ("test", TEST_SEED, args.n_test)):
        worlds[name] = build_world(
            work / f"world-{name}", n, 0, seed, sim.image_size,
            style=STYLES[sim.style], shifted_share=sim.shifted_share,
        )  # fmt: skip
    slots = ontology_slots(worlds["train"].graph)
    embedder = PhraseEmbedder()
    propose = None if args.proposer == "none" else sam3_proposer(args.proposer, config.sam3)
    proposed: dict[Path, pa.Table | None] = {}  # per world: what SAM 3 proposes, made once for both scorers

    def proposals(world, seed: int) -> pa.Table | None:  # type: ignore[no-untyped-def]
        if world.root not in proposed:
            proposed[world.root] = (
                None if propose is None else proposal_examples(world.root, propose, seed=seed)
            )
        return proposed[world.root]

    log.info("worlds rendered in %.0fs", time.time() - t0)
    ev_config = GroundedEVConfig(
        slots=slots, silhouette=args.ev_silhouette, centre_offsets=args.ev_centre_offsets
    )
    tasks = {
        "mv": (
            GroundedMVModel(GroundedMVConfig(slots=slots)),
            lambda world, seed: grounded_mv_examples(world.root, seed, slots, proposals(world, seed)),
            train.train, args.steps_mv, args.batch_mv,
        ),
        "ev": (
            GroundedEVModel(ev_config),
            lambda world, seed: grounded_ev_examples(world.root, seed, slots, ev_config.image_size, ev_config.grid,
                                               proposals(world, seed)),
            partial(train_ev, judge_steps=args.judge_steps_ev, fg_steps=args.fg_steps_ev), args.steps_ev, args.batch_ev,
        ),
    }  # fmt: skip
    for task in args.tasks:
        model, examples, fit, steps, batch = tasks[task]
        train_one(args, task, model, examples, fit, steps, batch, worlds, embedder, sim)
    log.info("done in %.0fs", time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
