"""Train the grounded MV and EV scorers for the demo (conceptengine/assets/verifier-grounded/mv/ and .../ev/).

`python scripts/train_demo_grounded_verifiers.py` (fixed seeds; both CPU threads by default). It:
1. renders a training world (seed WORLD_SEED, not the demo's seed 0) and a separately seeded test world, in
   the demo's scene style: a RENDERED domain of procedural shapes, not real images;
2. makes MV and EV examples on both as the demo makes them (verifiers/train_data_sim.py), answered by an
   error-free simulated reviewer, with the targets the world knows (objects' slot values, unboxed objects);
3. trains each scorer (verifiers/grounded) and scores it on the test world after every pass;
4. writes metrics.json next to each checkpoint (agreement with the reviewers, ROC AUC of P(Accept), the
   curve; for EV each half alone) and copies the checkpoints into the package.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from conceptengine.verifiers.grounded import scorer_tasks

log = logging.getLogger("train_demo_grounded_verifiers")
WORLD_SEED, TEST_SEED = 20251, 20252
REPO = Path(__file__).resolve().parents[1]
ASSET_DIR = REPO / "conceptengine" / "assets" / "verifier-grounded"
SHIPPED = ("config.json", "model.safetensors", "metrics.json")


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
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--tasks", type=scorer_tasks, default="mv,ev", help="which scorers to train: mv, ev or both"
    )
    args = ap.parse_args(argv)
    if min(args.n_train, args.n_test, args.steps_mv, args.steps_ev, args.batch_mv, args.batch_ev) < 1:
        ap.error("image counts, steps and batch sizes must be positive")
    return args


def train_one(args, task, model, examples, fit, steps, batch, worlds, embedder, sim) -> None:  # type: ignore[no-untyped-def]
    """Train one scorer, score it on the test world after every pass, save it with its metrics.json."""
    from conceptengine.verifiers.grounded import ev_train
    from conceptengine.verifiers.grounded.finetune import choice_probs
    from conceptengine.verifiers.train_data import TASKS
    from conceptengine.verifiers.train_metrics import agreement_metrics, auroc

    started = time.time()
    _, data = examples(worlds["train"], WORLD_SEED)
    test_rows, test = examples(worlds["test"], TEST_SEED)
    human = [r["choice"] for r in test_rows]
    accepted = np.array([h == "Accept" for h in human], dtype=float)
    curve: list[dict] = []

    def on_epoch(step: int, seconds: float) -> None:
        auc = auroc(choice_probs(model, test, embedder)[:, 0], accepted)
        curve.append({"step": step, "minutes": round(seconds / 60, 2), "auroc_p_accept": auc})
        model.train()
        log.info("%s step %d (%.1f min): test AUC %s", task, step, seconds / 60, auc)

    trained = fit(model, data, embedder, steps, batch_size=batch, on_epoch=on_epoch)
    world = {"train": [WORLD_SEED, args.n_train], "test": [TEST_SEED, args.n_test]}
    metrics = {
        "test": agreement_metrics(choice_probs(model, test, embedder), human, TASKS[task]),
        "curve": curve,
        "training": trained | {"examples": len(data), "wall_seconds": round(time.time() - started)},
        "threads": args.threads,
        "worlds": world | {"image_size": sim.image_size, "style": sim.style},
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
    from conceptengine.sim.world import build_world
    from conceptengine.verifiers.grounded import ev_train, train
    from conceptengine.verifiers.grounded.ev_model import GroundedEVConfig, GroundedEVModel
    from conceptengine.verifiers.grounded.model import GroundedMVConfig, GroundedMVModel
    from conceptengine.verifiers.grounded.phrases import PhraseEmbedder
    from conceptengine.verifiers.train_data_sim import (
        grounded_ev_examples,
        grounded_mv_examples,
        ontology_slots,
    )

    t0, work, sim = time.time(), Path(args.work), EngineConfig().media.sim
    worlds = {}
    for name, seed, n in (("train", WORLD_SEED, args.n_train), ("test", TEST_SEED, args.n_test)):
        worlds[name] = build_world(
            work / f"world-{name}", n, 0, seed, sim.image_size, style=STYLES[sim.style]
        )
    slots = ontology_slots(worlds["train"].graph)
    embedder = PhraseEmbedder()
    log.info("worlds rendered in %.0fs", time.time() - t0)
    ev_config = GroundedEVConfig(slots=slots)
    tasks = {
        "mv": (
            GroundedMVModel(GroundedMVConfig(slots=slots)),
            lambda world, seed: grounded_mv_examples(world.root, seed, slots),
            train.train, args.steps_mv, args.batch_mv,
        ),
        "ev": (
            GroundedEVModel(ev_config),
            lambda world, seed: grounded_ev_examples(world.root, seed, slots, ev_config.image_size, ev_config.grid),
            ev_train.train, args.steps_ev, args.batch_ev,
        ),
    }  # fmt: skip
    for task in args.tasks:
        model, examples, fit, steps, batch = tasks[task]
        train_one(args, task, model, examples, fit, steps, batch, worlds, embedder, sim)
    log.info("done in %.0fs", time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
