"""Image-NP pairs per second: naive SAM 3 (one full forward per pair) vs the engine's stage path.

Naive: for every pair, read and decode the image, run the processor, tokenize the NP and run one full
`Sam3Model` forward (pixel_values + input_ids), then the same post-processing; nothing is reused.
Engine: `decode_images` then `propose_masks` on the same pairs (vision once per image, text embeddings
cached, an image's NPs batched, post-processing only above the threshold).

Default: the small config (`model.tiny.build_tiny_sam3`) on CPU over rendered images (`sim.build_world`),
at 1, 8 and 28 NPs per image (SA-Co/HQ averages ~28). Both are measured in the same process, after a
warm-up, as the median of `--repeats` runs; the engine's text cache is cleared before every run, so each
NP is encoded at least once per run like in a fresh actor.

`--full`: the full-size `Sam3Config()` (random weights, real compute) at 1008 px, on CUDA in bf16. It
reports images/s and pairs/s and the stage's throughput as a fraction of a bare model loop on the same
inputs (vision once + batched NP forward, pixels already on the device, no pre/post-processing). Without a
GPU it exits with a message unless `--device cpu` forces a (very slow) CPU run with tiny counts.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa
import torch

from conceptengine.engine import ids
from conceptengine.engine.media import load_rgb
from conceptengine.engine.stage import StageConfig
from conceptengine.engine.tables import PAIRS
from conceptengine.model.preprocess import DecodeImages
from conceptengine.model.processing import PixelSpec
from conceptengine.model.propose_masks import ProposeMasks
from conceptengine.model.sam3_backend import RawOutputs, Sam3Detector
from conceptengine.sim.world import World, build_world


def np_pool(world: World, size: int) -> list[str]:
    """A fixed, diverse pool of the ontology's NPs (so images get different NPs and the cache works)."""
    nps = sorted(set(world.graph.noun_phrases()))
    step = max(1, len(nps) // size)
    return nps[::step][:size]


def make_pairs(world: World, n_images: int, nps_per_image: int, pool: list[str]) -> pa.Table:
    """Pairs ordered by media, each image's NPs a window of the pool that shifts per image."""
    rows = []
    for k, media in enumerate(world.media_table("train").slice(0, n_images).to_pylist()):
        for j in range(nps_per_image):
            phrase = pool[(k * 7 + j) % len(pool)]
            rows.append(
                {
                    "pair_id": ids.pair_id(media["media_id"], phrase),
                    "media_id": media["media_id"],
                    "uri": media["uri"],
                    "width": media["width"],
                    "height": media["height"],
                    "noun_phrase": phrase,
                    "node_id": None,
                    "origin": "ontology",
                    "round": 1,
                }
            )
    return pa.Table.from_pylist(rows, schema=PAIRS)


def batches(table: pa.Table, nps_per_image: int, target: int = 32) -> list[pa.Table]:
    """Whole images per batch (as the runner should feed the stage): a multiple of NPs per image near 32."""
    size = nps_per_image * max(1, target // nps_per_image)
    return [table.slice(s, size) for s in range(0, table.num_rows, size)]


def naive(detector: Sam3Detector, pairs: pa.Table, threshold: float) -> int:
    """One full forward per pair: decode, process, tokenize, forward, post-process. Returns instances."""
    found = 0
    with torch.inference_mode():
        for row in pairs.to_pylist():
            image = load_rgb(row["uri"])
            pixels = detector.inputs.pixels(image).to(detector.device, detector.dtype)
            tok = detector.inputs.tokens([row["noun_phrase"]])
            out = detector.model(
                pixel_values=pixels,
                input_ids=tok["input_ids"].to(detector.device),
                attention_mask=tok["attention_mask"].to(detector.device),
            )
            raw = RawOutputs(out.pred_logits, out.presence_logits, out.pred_boxes, out.pred_masks)
            dets = detector.postprocess(raw, row["height"], row["width"], threshold)
            found += len(dets[0].masks)
    _sync(detector)
    return found


def engine(decode: DecodeImages, propose: ProposeMasks, parts: list[pa.Table]) -> int:
    """The stage path as the runner chains it; the text cache starts empty like a fresh actor's."""
    propose.detector._text_cache.clear()
    found = 0
    for batch in parts:
        out = propose(decode(batch))
        found += sum(len(m) for m in out.column("masks").to_pylist())
    _sync(propose.detector)
    return found


def bare(detector: Sam3Detector, resized: list[torch.Tensor], nps: list[list[str]]) -> int:
    """Model-only loop: pixels already on the device, vision once + batched NP forward, no post-processing."""
    with torch.inference_mode():
        for px, phrases in zip(resized, nps):
            detector.forward_nps(None, phrases, vision=detector.vision_features_resized(px))
    _sync(detector)
    return 0


def _sync(detector: Sam3Detector) -> None:
    if detector.device.type == "cuda":
        torch.cuda.synchronize(detector.device)


def timed(fns: dict[str, Callable[[], int]], repeats: int) -> dict[str, tuple[float, int]]:
    """Median seconds over `repeats` rounds after one untimed warm-up each, plus the last instance count.

    The contenders alternate within each round, so load from other processes hits them alike.
    """
    found = {name: fn() for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            found[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(times[name]), found[name]) for name in fns}


def run_small(args: argparse.Namespace, work: Path) -> dict:
    from conceptengine.model.tiny import build_tiny_sam3

    torch.set_num_threads(max(1, args.threads or torch.get_num_threads()))
    world = build_world(work / "world", n_train=args.images, n_gold=0, seed=args.seed)
    model_dir = build_tiny_sam3(str(work / "sam3"), world.graph.noun_phrases(), image_size=args.image_size)
    decode = DecodeImages(StageConfig(), model_path=model_dir)
    decode.setup()
    propose = ProposeMasks(
        StageConfig(), model_path=model_dir, score_threshold=args.threshold, device=args.device or "cpu"
    )
    propose.setup()
    pool = np_pool(world, args.pool)
    figures: dict = {
        "mode": "small",
        "device": str(propose.detector.device),
        "dtype": str(propose.detector.dtype).removeprefix("torch."),
        "images": args.images,
        "image_size": args.image_size,
        "threshold": args.threshold,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
    }
    for n in args.nps:
        pairs = make_pairs(world, args.images, n, pool)
        parts = batches(pairs, n)
        res = timed(
            {
                "naive": partial(naive, propose.detector, pairs, args.threshold),
                "engine": partial(engine, decode, propose, parts),
            },
            args.repeats,
        )
        (t_naive, found_naive), (t_engine, found_engine) = res["naive"], res["engine"]
        figures[f"nps_{n}"] = {
            "pairs": pairs.num_rows,
            "naive_pairs_per_s": round(pairs.num_rows / t_naive, 2),
            "engine_pairs_per_s": round(pairs.num_rows / t_engine, 2),
            "ratio": round(t_naive / t_engine, 2),
            "instances_naive": found_naive,
            "instances_engine": found_engine,
        }
        print(f"{n:>3} NPs/image: {json.dumps(figures[f'nps_{n}'])}", file=sys.stderr)
    figures["ratio_at_28"] = figures.get("nps_28", {}).get("ratio")
    figures["text_cache"] = propose.detector.cache_info()
    return figures


def run_full(args: argparse.Namespace, work: Path) -> dict:
    """Full-size SAM 3 (random weights) on the GPU: stage throughput vs a bare model loop."""
    from transformers import Sam3Config, Sam3Model

    from conceptengine.model.processing import load_sam3_inputs
    from conceptengine.model.tiny import processor_config, train_clip_tokenizer

    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        raise SystemExit(
            "bench_sam3_proposals --full needs a CUDA GPU (the full model at 1008 px is minutes per image on a "
            "CPU); run it on a GPU machine, or pass --device cpu --images 1 --nps 1 to force a CPU run"
        )
    # The processor files only (no weights on disk): the random-weight model is built straight on the device.
    world = build_world(
        work / "world", n_train=args.images, n_gold=0, seed=args.seed, image_size=args.world_size
    )
    ckpt = work / "sam3-full"
    ckpt.mkdir(parents=True, exist_ok=True)
    tok = train_clip_tokenizer(world.graph.noun_phrases())
    tok.save_pretrained(ckpt)
    (ckpt / "processor_config.json").write_text(json.dumps(processor_config(1008)))
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = Sam3Model(Sam3Config()).to(dtype).eval()
    detector = Sam3Detector(
        model,
        load_sam3_inputs(str(ckpt)),
        "sam3-full-random",
        device,
        pixel_spec=PixelSpec.from_checkpoint(str(ckpt)),
    )
    decode = DecodeImages(StageConfig(), model_path=str(ckpt))
    decode.setup()
    propose = ProposeMasks(StageConfig(), model_path=str(ckpt), score_threshold=args.threshold, device=device)
    propose.detector = detector  # the in-memory model stands in for from_pretrained; same class, same path
    pool = np_pool(world, args.pool)
    figures: dict = {
        "mode": "full",
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else device,
        "dtype": str(dtype).removeprefix("torch."),
        "images": args.images,
        "image_size": 1008,
        "world_image_size": args.world_size,
        "threshold": args.threshold,
        "repeats": args.repeats,
    }
    for n in args.nps:
        pairs = make_pairs(world, args.images, n, pool)
        parts = batches(pairs, n)
        decoded = decode(pairs).to_pylist()
        resized, phrases = [], []
        for k in range(0, len(decoded), n):
            row = decoded[k]
            resized.append(
                torch.frombuffer(bytearray(row["pixels"]), dtype=torch.uint8)
                .view(1, *row["pixels_shape"])
                .to(device)
            )
            phrases.append([r["noun_phrase"] for r in decoded[k : k + n]])
        res = timed(
            {
                "engine": partial(engine, decode, propose, parts),
                "bare": partial(bare, detector, resized, phrases),
            },
            args.repeats,
        )
        (t_engine, found), (t_bare, _) = res["engine"], res["bare"]
        figures[f"nps_{n}"] = {
            "pairs": pairs.num_rows,
            "engine_images_per_s": round(args.images / t_engine, 3),
            "engine_pairs_per_s": round(pairs.num_rows / t_engine, 2),
            "bare_pairs_per_s": round(pairs.num_rows / t_bare, 2),
            "fraction_of_bare": round(t_bare / t_engine, 3),
            "instances": found,
        }
        print(f"{n:>3} NPs/image: {json.dumps(figures[f'nps_{n}'])}", file=sys.stderr)
    if device.startswith("cuda"):
        figures["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return figures


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="full-size Sam3Config() at 1008 px (GPU)")
    p.add_argument("--nps", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 28])
    p.add_argument("--images", type=int, default=None, help="images per measurement (default 6, --full 16)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--image-size", type=int, default=224, help="small config's input size")
    p.add_argument("--world-size", type=int, default=1008, help="--full: rendered image size")
    p.add_argument("--pool", type=int, default=64, help="distinct NPs the images draw from")
    p.add_argument("--device", default=None, help="cpu or cuda[:i]; default cpu (small) / cuda (--full)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="keep the world and checkpoint here instead of a temp dir")
    args = p.parse_args(argv)
    args.images = args.images or (16 if args.full else 6)
    for name in ("images", "repeats", "pool"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if any(n < 1 for n in args.nps):
        p.error("--nps must be positive integers, e.g. 1,8,28")
    if not 0.0 <= args.threshold <= 1.0:
        p.error("--threshold must be in [0, 1]")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="bench-sam3-") as tmp:
        work = Path(args.workdir or tmp)
        figures = run_full(args, work) if args.full else run_small(args, work)
    print(json.dumps(figures, sort_keys=True))
    return figures


if __name__ == "__main__":
    main()
