"""Train the small SAM 3 that ships as the demo's starting checkpoint (conceptengine/assets/sam3-demo/).

The shipped checkpoint was made by two calls (fixed seeds, `--style demo`), the second continuing the first:
    python scripts/train_demo_sam3.py --steps 10000 --threads 2
    python scripts/train_demo_sam3.py --init conceptengine/assets/sam3-demo --steps 1000 --lr 1e-4 \
        --threads 2 --loss-weights '{"focal_gamma": 0.0, "focal_alpha": 0.75}'
On 2 CPU cores they ran at about 0.2-0.3 s per step (55 + 5 minutes, sharing the cores with other work).
The second stage swaps the focal loss on the query scores for plain class-balanced BCE: after the first,
the best-matching query of a ground-truth instance scored 0.15 (median), so few detections reached the
SA-Co threshold of 0.5 although the ranking was right; 1,000 calibrating steps raised gold cgF1 4.5x.
`--in-process --device cuda` runs the same training on a GPU box without Ray (scripts/device/gpu_check.sh).
Each call:
1. renders its own training world (seed WORLD_SEED, not the demo's seed 0) — a RENDERED domain of
   procedural shapes, not real images;
2. turns the oracle's exact ground truth into SA-Co-style training pairs: positives at every hierarchy level
   and with attribute modifiers ("polygon", "red striped square"), half of the pairs negatives (many of them
   hard: siblings / cousins / uncles), the presence head's only teacher of "absent";
3. HOLDS OUT the concept family in `DEMO_HELD_OUT` ("round shape": circle, ellipse, ring, semicircle,
   crescent): no NP naming them or their synonyms, and no pair whose instances include one (a "shape" pair
   on an image with a circle would either teach a circle as a shape or, with the circle left out, as
   background) — the engine's retraining rounds are meant to grow them;
4. builds the tiny Sam3Model (model/tiny.py) at 168 px with a tokenizer over the FULL ontology vocabulary,
   so held-out words have tokens, and trains it with the engine's trainer (Ray Train local mode);
5. evaluates on the world's gold split — overall, seen concepts, held-out concepts (cgF1, IL_MCC, pmF1) —
   and writes the checkpoint plus metrics.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from conceptengine.engine import ids
from conceptengine.engine.rle import box_xyxy
from conceptengine.engine.tables import ANNOTATIONS
from conceptengine.model.train_data import DEMO_HELD_OUT
from conceptengine.sim.render import STYLES

log = logging.getLogger("train_demo_sam3")
WORLD_SEED = 20250
# Every detection must reach presence * query score >= 0.5 (the SA-Co threshold). A balanced pos/neg mix
# makes "always 0.5" a comfortable optimum for the presence head, so presence is weighted up; RetinaNet's
# alpha = 0.25 keeps matched-query probabilities low (a 1,000-step pilot peaked at ~0.16), so the class
# focal loss is balanced (alpha 0.5, gamma 1) and weighted up as well.
DEMO_LOSS_WEIGHTS: dict[str, float] = {"presence": 10.0, "cls": 5.0, "focal_alpha": 0.5, "focal_gamma": 1.0}
REPO = Path(__file__).resolve().parents[1]
ASSET_DIR = REPO / "conceptengine" / "assets" / "sam3-demo"
SHIPPED = (
    "config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "loss_weights.json",  # retraining in the demo's loop continues with these (model/train.py)
)


def held_out_nodes(graph) -> set[str]:
    """The held-out concepts and every concept below them."""
    return {n for c in DEMO_HELD_OUT for n in (c, *graph.descendants(c))}


def held_out_nps(graph) -> set[str]:
    """Every surface form naming a held-out concept (names, synonyms, plurals are caught by resolve)."""
    nodes = held_out_nodes(graph)
    return {graph.node(c).name for c in nodes} | {s for c in nodes for s in graph.node(c).synonyms}


def touches_held_out(oracle, media_id: str, noun_phrase: str) -> bool:
    """True when the NP names a held-out concept, or when one of its instances in this image is one."""
    graph = oracle.graph
    parsed = graph.resolve(noun_phrase)
    if parsed is None:
        return False
    if any(graph.is_a(parsed.node_id, c) for c in DEMO_HELD_OUT):
        return True
    mods = dict(parsed.modifiers)
    for inst in oracle.world.record(media_id)["instances"]:
        attrs = {"colour": inst["colour"], "pattern": inst["pattern"]}
        matches = graph.is_a(inst["leaf"], parsed.node_id) and all(attrs.get(k) == v for k, v in mods.items())
        if matches and any(graph.is_a(inst["leaf"], c) for c in DEMO_HELD_OUT):
            return True
    return False


def training_pairs(oracle, nps_per_image: int, seed: int) -> pa.Table:
    table = oracle.gold_annotations(split="train", nps_per_image=nps_per_image, negative_share=0.5, seed=seed)
    keep = [not touches_held_out(oracle, r["media_id"], r["noun_phrase"]) for r in table.to_pylist()]
    return table.filter(pa.array(keep))


def annotation_row(oracle, media_id: str, noun_phrase: str) -> dict:
    h, w = oracle.media_size(media_id)
    pair = ids.pair_id(media_id, noun_phrase)
    masks = [
        {"instance_id": ids.instance_id(pair, i), "rle": c, "box_xyxy": box_xyxy(c, h, w), "score": 1.0}
        for i, c in enumerate(oracle.instances(media_id, noun_phrase))
    ]
    return {
        "pair_id": pair, "media_id": media_id, "uri": str(oracle.world.image_path(media_id)), "width": w, "height": h,
        "noun_phrase": noun_phrase, "masks": masks, "is_exhaustive": True, "is_negative": not masks, "provenance": "oracle",
        "round": 0,
    }  # fmt: skip


def held_out_gold(oracle) -> pa.Table:
    """Every gold image asked for every held-out concept by name: positives where present, else negatives."""
    rows = [
        annotation_row(oracle, m, oracle.graph.node(c).name)
        for m in sorted(oracle.world.media_ids("gold"))
        for c in DEMO_HELD_OUT
    ]
    return pa.Table.from_pylist(rows, schema=ANNOTATIONS)


def init_record(init: str) -> dict:
    """The metrics.json of a checkpoint this script made: a continuation takes its architecture from it and
    keeps its training record."""
    path = Path(init) / "metrics.json"
    if not path.exists():
        raise SystemExit(
            f"--init {init}: no metrics.json there; continue from a checkpoint this script wrote"
        )
    return json.loads(path.read_text())


def earlier_stages(record: dict | None) -> list[dict]:
    """The training records of the checkpoint a continuation starts from (its own earlier stages first)."""
    if record is None:
        return []
    return [*record.get("earlier_stages", []), record["training"]]


def evaluate(model_dir: str, gold: dict[str, pa.Table]) -> dict:
    from conceptengine.model.evaluate import evaluate_detector
    from conceptengine.model.sam3_backend import Sam3Detector

    det = Sam3Detector.from_pretrained(model_dir)
    out = {}
    for name, table in gold.items():
        m = evaluate_detector(det, table)
        out[name] = {"cgF1": m.cgF1, "IL_MCC": m.IL_MCC, "pmF1": m.pmF1, "counts": dict(m.counts)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/sam3-demo-work", help="scratch directory (world, checkpoints)")
    ap.add_argument("--out", default=str(ASSET_DIR), help="where the shipped checkpoint is written")
    ap.add_argument("--n-train", type=int, default=1200)
    ap.add_argument("--n-gold", type=int, default=80)
    ap.add_argument("--image-size", type=int, default=168, help="model input size (multiple of 14)")
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-nps", type=int, default=6)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--style", choices=sorted(STYLES), default="demo", help="scene difficulty of the world")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--vit-layers", type=int, default=2)
    ap.add_argument("--decoder-layers", type=int, default=2)
    ap.add_argument("--queries", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--init",
        default=None,
        help="continue from this checkpoint (its architecture and tokenizer) instead of a fresh tiny SAM 3",
    )
    ap.add_argument(
        "--loss-weights",
        type=json.loads,
        default={},
        help='JSON overrides of DEMO_LOSS_WEIGHTS, e.g. \'{"focal_gamma": 0, "focal_alpha": 0.75}\'',
    )
    ap.add_argument("--loader-workers", type=int, default=0, help="DataLoader processes (GPU: keep it fed)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (the trainer's device)")
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="call the training loop directly instead of through Ray Train (a GPU box without Ray)",
    )
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from conceptengine.model.tiny import TinySize, build_tiny_sam3
    from conceptengine.model.train import TrainSam3Config, train_sam3
    from conceptengine.model.train_ray import train_sam3_ray
    from conceptengine.pipelines.demo import ontology_vocabulary
    from conceptengine.sim.oracle import Oracle
    from conceptengine.sim.world import build_world

    record = init_record(args.init) if args.init else None  # before minutes of rendering, not after
    t0 = time.time()
    work = Path(args.work)
    world = build_world(
        work / "world", args.n_train, args.n_gold, seed=WORLD_SEED, image_size=192, style=STYLES[args.style]
    )
    oracle = Oracle(work / "world")
    train = training_pairs(oracle, nps_per_image=16, seed=args.seed)
    leaked = held_out_nps(world.graph) & {ids.normalize_np(n) for n in train["noun_phrase"].to_pylist()}
    assert not leaked, f"held-out NPs in the training data: {leaked}"
    pq.write_table(train, work / "train.parquet")
    n_neg = sum(train["is_negative"].to_pylist())
    log.info(
        "world rendered, %d training pairs (%d negative) in %.0fs", train.num_rows, n_neg, time.time() - t0
    )

    size = TinySize(
        hidden=args.hidden,
        vit_layers=args.vit_layers,
        detr_decoder_layers=args.decoder_layers,
        num_queries=args.queries,
    )
    if record is not None:
        init = args.init
        size = TinySize(**record["architecture"])
    else:
        init = build_tiny_sam3(
            str(work / "init"), ontology_vocabulary(world.graph), args.image_size, args.seed, size=size
        )
    cfg = TrainSam3Config(
        init_checkpoint=init,
        output_dir=str(work / "trained"),
        annotations=str(work / "train.parquet"),
        steps=args.steps,
        batch_size=args.batch_size,
        max_nps_per_image=args.max_nps,
        lr=args.lr,
        warmup_steps=min(100, args.steps // 10),
        grad_clip=0.1,
        seed=args.seed,
        checkpoint_every=100,
        log_every=20,
        num_workers=0,
        device=args.device,
        loader_workers=args.loader_workers,
        loss_weights=DEMO_LOSS_WEIGHTS | args.loss_weights,
    )
    (train_sam3 if args.in_process else train_sam3_ray)(cfg)
    t_train = time.time() - t0

    gold_all = oracle.gold_annotations(split="gold", nps_per_image=8, negative_share=0.5, seed=args.seed)
    seen_mask = [not touches_held_out(oracle, r["media_id"], r["noun_phrase"]) for r in gold_all.to_pylist()]
    gold = {
        "overall": gold_all,
        "seen": gold_all.filter(pa.array(seen_mask)),
        "held_out": held_out_gold(oracle),
    }
    metrics = {
        "trained": evaluate(cfg.output_dir, gold),
        # A continuation (--init) is compared with the checkpoint it started from, a fresh run with its
        # untrained init; the earlier stages' training records are kept, in order.
        ("init" if args.init else "untrained_init"): evaluate(init, gold),
        "earlier_stages": earlier_stages(record),
        "held_out_concepts": sorted(held_out_nodes(world.graph)),
        "world": {
            "seed": WORLD_SEED,
            "n_train": args.n_train,
            "n_gold": args.n_gold,
            "image_size": 192,
            "style": args.style,
        },
        "architecture": vars(size),
        "training": {
            **cfg.model_dump(mode="json", exclude={"init_checkpoint", "output_dir", "annotations"}),
            "pairs": train.num_rows,
            "negative_pairs": n_neg,
            "wall_seconds_this_call": round(t_train),
            "resumed_from_step": json.loads((Path(cfg.output_dir) / "training.json").read_text())[
                "resumed_from"
            ],
        },
        "note": "RENDERED domain (procedural shapes), not real images. Re-create: the calls in the docstring of scripts/train_demo_sam3.py",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        src = Path(cfg.output_dir) / name
        if src.exists():
            shutil.copy2(src, out / name)
    shutil.copy2(Path(cfg.output_dir) / "train_log.jsonl", out / "train_log.jsonl")
    # Concept names (not node ids): the demo passes them to gold.report_concepts and ontology.focus_concepts.
    names = [world.graph.node(c).name for c in DEMO_HELD_OUT]
    (out / "held_out.json").write_text(json.dumps(names) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("done in %.0fs: %s", time.time() - t0, json.dumps(metrics["trained"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
