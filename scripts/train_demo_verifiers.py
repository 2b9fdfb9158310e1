"""Train the small MV and EV verifiers the demo ships (conceptengine/assets/verifier-demo/mv/ and .../ev/).

Re-run with `python scripts/train_demo_verifiers.py` (fixed seeds; one CPU thread, the budget is about a
quarter of an hour on one core). A later call with the same --work and a larger --steps-* resumes each
verifier from its last checkpoint there. It:
1. renders its own training world (seed WORLD_SEED, not the demo's seed 0, in the demo's scene style) — a
   RENDERED domain of procedural shapes, not real images;
2. makes MV and EV examples from the oracle (sim/verifier_examples.py): ground-truth masks and realistic
   mask errors, pairs with all / some / none of their instances boxed, negatives; each labelled with the
   answer the demo's simulated reviewers give at error rate 0, so the verifiers imitate the demo's humans;
3. builds the tiny LLaVA (verifiers/tiny.py) over the ontology's vocabulary at the demo's view size and
   FULLY fine-tunes one copy per task with the engine's trainer (Ray Train local mode): LoRA cannot teach
   random weights, so `lora: false` here, while in-loop retraining of these checkpoints uses LoRA;
4. reports accuracy, per-choice agreement, ECE and separability of P(Accept) on held-out images
   (metrics.json next to each checkpoint) and copies the checkpoints into the package.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from rich.console import Console

log = logging.getLogger("train_demo_verifiers")
WORLD_SEED = 20251
REPO = Path(__file__).resolve().parents[1]
ASSET_DIR = REPO / "conceptengine" / "assets" / "verifier-demo"
SHIPPED = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "metrics.json",
    "train_log.jsonl",
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--work", default="/tmp/verifier-demo-work", help="scratch directory (world, checkpoints)"
    )
    ap.add_argument("--out", default=str(ASSET_DIR), help="where the shipped mv/ and ev/ checkpoints go")
    ap.add_argument("--n-train", type=int, default=400, help="rendered images (20%% are held out by image)")
    ap.add_argument("--steps-mv", type=int, default=1200)
    ap.add_argument("--steps-ev", type=int, default=1200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the budget assumes 1)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda for a longer / larger run on a GPU")
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="call the training loop directly instead of through Ray Train (a GPU box without Ray)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)

    from conceptengine.config import EngineConfig
    from conceptengine.pipelines.demo import ontology_vocabulary
    from conceptengine.sim.render import STYLES
    from conceptengine.sim.verifier_examples import oracle_examples
    from conceptengine.sim.world import build_world
    from conceptengine.training.verifier import TrainVerifierConfig, train_verifier
    from conceptengine.training.verifier_ray import train_verifier_ray
    from conceptengine.verifiers.tiny import build_tiny_verifier
    from conceptengine.verifiers.train_metrics import metrics_table

    t0 = time.time()
    demo = EngineConfig()
    work = Path(args.work)
    sim = demo.media.sim
    world = build_world(work / "world", args.n_train, 0, WORLD_SEED, sim.image_size, style=STYLES[sim.style])
    examples = oracle_examples(work / "world", seed=args.seed)
    pq.write_table(examples, work / "examples.parquet")
    log.info("world and %d examples in %.0fs", examples.num_rows, time.time() - t0)
    view = demo.verifier.view_size
    init = build_tiny_verifier(
        str(work / "init"), ontology_vocabulary(world.graph), args.seed, image_size=view
    )

    console, out = Console(), Path(args.out)
    for task, steps in (("mv", args.steps_mv), ("ev", args.steps_ev)):
        started = time.time()
        cfg = TrainVerifierConfig(
            task=task,
            init_checkpoint=init,
            output_dir=str(work / task),
            examples=str(work / "examples.parquet"),
            view_size=view,
            lora=False,
            steps=steps,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_steps=min(100, steps // 10),
            weight_decay=0.01,
            seed=args.seed,
            device=args.device,
            use_gpu=args.device.startswith("cuda"),
            checkpoint_every=250,
            log_every=50,
            num_workers=0,
        )
        (train_verifier if args.in_process else train_verifier_ray)(cfg)
        metrics = json.loads((work / task / "metrics.json").read_text())
        metrics["training"] = {
            "world": {
                "seed": WORLD_SEED,
                "n_train": args.n_train,
                "image_size": sim.image_size,
                "style": sim.style,
            },
            "wall_seconds_this_call": round(time.time() - started),
            "threads": args.threads,
            "note": "RENDERED domain (procedural shapes). Re-create: python scripts/train_demo_verifiers.py",
        }
        (work / task / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        target = out / task
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for name in SHIPPED:
            if (work / task / name).exists():
                shutil.copy2(work / task / name, target / name)
        console.print(metrics_table(task, metrics["holdout"]))
    log.info("done in %.0fs", time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
