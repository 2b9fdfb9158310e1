"""One round's chain at 10 k, 100 k and 1 M image-NP pairs, streamed through Ray without the driver.

The engine runs each step as a block step (engine/block_files.py): Ray Data reads the upstream step's files
on the workers, the stage maps them on an actor pool, write tasks upload the blocks, and the driver writes
only the step's manifest. As in a round (pipelines/image.py), NP proposal, masks, verification and routing run
as one stream (engine/steps.py, run_block_steps: each step still writes its own blocks and manifest on the
way), and commit runs on its own (a round asks people before it commits). The chain:

  NP proposal   the engine's ProposeNPs (the rendered world's ontology; concepts guessed from it, no captioner)
  masks         STAND-IN for SAM 3 (FastMaskStage below): 0-3 masks a pair, COCO RLE of ellipses in a
                1008 x 1008 image, taken from a bank encoded once with pycocotools: real RLE in size and form
  verification  STAND-IN for the MV / EV verifiers (FastScoreStage below): scores drawn from a hash of the ids
  routing       the engine's RouteStage, fixed thresholds
  commit        the engine's CommitStage (no pair reviewed by people, as in a round whose every pair the
                verifiers decided) and its annotation rows; the WebDataset shards are left out: the
                stand-in pool has no image bytes to pack

The baseline is the same five stages as one bare Ray Data pipeline (read_parquet, five map_batches on actor
pools, write_parquet): no manifests, no block records, no step boundaries.

Per size and mode, in a fresh process with its own Ray (the fastest of `--repeats` runs below 1 M pairs): wall
time, pairs/s, the driver's peak RSS (ru_maxrss of that process) and the largest Ray worker's peak RSS (sampled
every 0.2 s). The pool (a media table in Parquet files, the pool listing) is written first and not timed. Last
line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Self

import fsspec
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from pycocotools import mask as coco_mask

from conceptengine.engine import ids, rle
from conceptengine.engine.runner import Link, RayRunner
from conceptengine.engine.stage import Stage, StageConfig
from conceptengine.engine.steps import BlockStep, StepResult, run_block_steps
from conceptengine.engine.store import RunStore, StepRef
from conceptengine.engine.tables import ANNOTATIONS, MEDIA, PAIRS, PROPOSALS, VERIFIED
from conceptengine.ontology.np_proposal import ProposeNPs
from conceptengine.round.annotations import annotation_rows
from conceptengine.round.commit_stage import CommitStage
from conceptengine.sim.taxonomy import shapes_graph
from conceptengine.verifiers.choices import EV, MV
from conceptengine.verifiers.route_stage import ROUTED, RouteStage
from conceptengine.verifiers.routing import TaskThresholds

SIZES = (10_000, 100_000, 1_000_000)
NPS_PER_IMAGE = 12  # ProposeNPs' max_nps_per_image: the rendered ontology always has that many to offer
IMAGE_SIDE = 1008  # SAM 3's input size
MEDIA_ROWS_PER_FILE = 5_000
# This machine is shared and its speed swings by the minute: below this size each mode runs `--repeats` times and
# its fastest run counts; a run of this size takes minutes, so noise is a small share of it and it runs once.
ONCE_FROM = 1_000_000
THRESHOLDS = {"mv": TaskThresholds(accept=0.8, reject=0.2), "ev": TaskThresholds(accept=0.8, reject=None)}


class FastMaskStage(Stage):
    """STAND-IN for SAM 3: per pair 0-3 masks (by a hash of its id), each a real COCO RLE of an ellipse in a
    1008 x 1008 image, shifted by a few pixels per mask so that no two masks are the same bytes (as no two
    of SAM 3's are: Parquet must not get to compress them away)."""

    name: ClassVar[str] = "bench_fast_masks"
    input_columns: ClassVar[tuple[str, ...]] = tuple(PAIRS.names)
    output_columns: ClassVar[tuple[str, ...]] = tuple(PROPOSALS.names)

    def setup(self) -> None:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:IMAGE_SIDE, :IMAGE_SIDE]
        self.bank = []  # (uncompressed counts, box) of ellipses kept 20 px inside the image
        for _ in range(32):
            ry, rx = rng.uniform(20, 200, 2)
            cy, cx = rng.uniform(220, IMAGE_SIDE - 220, 2)
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            flat = mask.flatten(order="F").astype(np.int8)  # COCO RLE runs down columns, background first
            edges = np.flatnonzero(np.diff(flat)) + 1
            counts = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
            box = rle.box_xyxy(rle.encode(mask), IMAGE_SIDE, IMAGE_SIDE)
            self.bank.append((counts, box))

    def _mask(self, pair_id: str, k: int, h: int) -> dict:
        counts, box = self.bank[(h >> (5 * k)) % len(self.bank)]
        shift = 1 + (h >> (3 * k)) % 997  # moves the ellipse down its columns: a distinct, valid RLE
        counts = [counts[0] + shift, *counts[1:-1], counts[-1] - shift]
        compressed = coco_mask.frPyObjects(
            {"counts": counts, "size": [IMAGE_SIDE, IMAGE_SIDE]}, IMAGE_SIDE, IMAGE_SIDE
        )
        return {
            "instance_id": ids.instance_id(pair_id, k),
            "rle": compressed["counts"].decode(),
            "box_xyxy": box,
            "score": 0.9,
        }

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not hasattr(self, "bank"):
            self.setup()
        masks = []
        for pair_id in batch["pair_id"].to_pylist():
            h = ids.stable_seed(0, "masks", pair_id)
            masks.append([self._mask(pair_id, k, h) for k in range((0, 0, 1, 1, 2, 3)[h % 6])])
        out = batch.select(PAIRS.names)
        extra = {
            "presence": pa.array([0.9 if m else 0.1 for m in masks], pa.float32()),
            "masks": pa.array(masks, PROPOSALS.field("masks").type),
            "model_version": pa.array(["stand-in"] * batch.num_rows, pa.string()),
            "error": pa.array([None] * batch.num_rows, pa.string()),
        }
        for name, values in extra.items():
            out = out.append_column(PROPOSALS.field(name), values)
        return out


class FastScoreStage(Stage):
    """STAND-IN for the MV / EV verifiers: choice probabilities drawn from a hash of the mask and pair ids."""

    name: ClassVar[str] = "bench_fast_scores"
    input_columns: ClassVar[tuple[str, ...]] = tuple(PROPOSALS.names)
    output_columns: ClassVar[tuple[str, ...]] = tuple(VERIFIED.names)

    @staticmethod
    def _probs(key: str, n: int, accept: int) -> list[float]:
        p = (ids.stable_seed(0, "score", key) % 1000) / 1000
        rest = (1 - p) / (n - 1)
        return [p if i == accept else rest for i in range(n)]

    def __call__(self, batch: pa.Table) -> pa.Table:
        mv_accept, ev_accept = MV.index("Accept"), EV.index("Accept")
        mv, ev = [], []
        for pair_id, masks in zip(batch["pair_id"].to_pylist(), batch["masks"].to_pylist(), strict=True):
            mv.append([self._probs(m["instance_id"], len(MV.names), mv_accept) for m in masks])
            ev.append(self._probs(pair_id, len(EV.names), ev_accept))
        out = batch
        for name, values in (
            ("mv_probs", mv),
            ("ev_probs", ev),
            ("verifier_version", ["stand-in"] * len(ev)),
        ):
            out = out.append_column(VERIFIED.field(name), pa.array(values, VERIFIED.field(name).type))
        return out


# The engine's streams, as a round runs them: steps in one stream share the cluster side by side.
STREAMS = (("propose_nps", "propose_masks", "ai_verify", "route"), ("commit",))


def chain_links(ontology: str) -> list[tuple[str, Link, pa.Schema, Any]]:
    """(step, link, output schema, what the step writes of its link's output: all, or a function of it) of
    the round's chain, in order."""
    # A stream's pools may claim half the cluster together (RayRunner._check_chain_fits): one quarter-CPU actor
    # each for the four streamed steps; commit runs alone, on two half-CPU actors.
    streamed = StageConfig(batch_size=256, num_cpus=0.25, concurrency=1)
    alone = StageConfig(batch_size=256, num_cpus=0.5, concurrency=2)
    route = {"thresholds": THRESHOLDS, "audit_share": 0.1, "seed": 0, "ev_scope": "decided_masks"}
    nps = {"ontology_path": ontology, "ontology_guesses": True, "round": 1, "seed": 0}
    per_image = streamed.model_copy(update={"batch_size": 256 // NPS_PER_IMAGE})  # rows are images here
    return [
        ("propose_nps", Link(ProposeNPs, per_image, nps), PAIRS, None),
        ("propose_masks", Link(FastMaskStage, streamed), PROPOSALS, None),
        ("ai_verify", Link(FastScoreStage, streamed), VERIFIED, None),
        ("route", Link(RouteStage, streamed, route), ROUTED, None),
        ("commit", Link(CommitStage, alone, {"round": 1}), ANNOTATIONS, annotation_rows),
    ]


def write_pool(pool_dir: Path, n_images: int) -> None:
    pool_dir.mkdir(parents=True, exist_ok=True)
    for start in range(0, n_images, MEDIA_ROWS_PER_FILE):
        n = min(MEDIA_ROWS_PER_FILE, n_images - start)
        media_ids = [f"m{i:08d}" for i in range(start, start + n)]
        table = pa.table(
            {
                "media_id": media_ids,
                "uri": [f"s3://pool/{m}.jpg" for m in media_ids],
                "width": pa.array([IMAGE_SIDE] * n, pa.int32()),
                "height": pa.array([IMAGE_SIDE] * n, pa.int32()),
                "domain": ["pool"] * n,
                "split": ["train"] * n,
                "error": pa.array([None] * n, pa.string()),
            },
            schema=MEDIA,
        )
        pq.write_table(table, pool_dir / f"media-{start // MEDIA_ROWS_PER_FILE:05d}.parquet")


class _Host:
    """What run_block_steps needs of a run: its store, config hash, (no) progress listener and runner."""

    def __init__(self, url: str, runner: RayRunner):
        self.store = RunStore(url)
        self.config_hash = "bench-scale"
        self.on_step = None
        self.runner = runner


def run_engine(pool_url: str, run_url: str, links) -> int:
    """Every step a block step, in the round's streams; returns the committed annotation rows (from the
    commit's manifest)."""
    host = _Host(run_url, RayRunner(num_cpus=2))
    fs, root = fsspec.core.url_to_fs(pool_url)
    pool = [fs.unstrip_protocol(p) for p in sorted(fs.glob(f"{root}/*.parquet"))]
    by_step = {step: (link, schema, keep) for step, link, schema, keep in links}
    upstream: StepResult | None = None
    for stream in STREAMS:
        steps = []
        for k, step in enumerate(stream):
            link, schema, keep = by_step[step]
            first = k == 0
            steps.append(
                BlockStep(
                    StepRef(1, step),
                    [upstream.fingerprint if upstream else "pool"] if first else [],
                    [link],
                    {step: keep},
                    schema,
                    reads=None if first else stream[k - 1],
                    sources=_sources_after(upstream, pool) if first else None,
                )
            )
        upstream = run_block_steps(host, steps)[-1]
    return upstream.manifest["rows"]["commit"]


def _sources_after(upstream: StepResult | None, pool: list[str]):
    """A stream's first step reads the pool, or the table of the step before it (named like that step)."""
    urls = upstream.urls(upstream.ref.step) if upstream else pool
    return lambda step_url: (urls, {})


def run_bare(pool_url: str, out_dir: str, links) -> int:
    """The same stages as one Ray Data pipeline, actor pools sharing the two cores."""
    import ray
    import ray.data

    from conceptengine.engine.runner import _RayStageAdapter, configure_ray_data

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    configure_ray_data()  # the engine's Ray Data settings: the comparison measures the engine, not the reader
    ds = ray.data.read_parquet(pool_url)
    for _, link, _, keep in links:
        ds = ds.map_batches(
            _RayStageAdapter,
            fn_constructor_kwargs={"stage_cls": link.stage_cls, "cfg": link.cfg, "params": link.params},
            batch_size=link.cfg.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=0.2,
        )
        if keep is not None:
            ds = ds.map_batches(keep, batch_format="pyarrow", batch_size=None)
    ds.write_parquet(out_dir)
    return sum(pq.read_metadata(p).num_rows for p in Path(out_dir).glob("*.parquet"))


class WorkerPeak:
    """The largest resident set of any Ray worker process (proctitle `ray::...`), sampled in a thread."""

    def __init__(self, every_s: float = 0.2):
        self.peak = 0
        self.peak_title = ""
        self.peak_private = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            for proc in psutil.process_iter(["name", "cmdline", "memory_info"]):
                try:
                    title = " ".join(proc.info["cmdline"] or []) or proc.info["name"] or ""
                    memory = proc.info["memory_info"]
                    if not title.startswith("ray::") or memory is None:
                        continue
                    if memory.rss > self.peak:
                        self.peak, self.peak_title = memory.rss, title
                    # Object-store pages a worker touches count in its RSS; without them, its own memory.
                    self.peak_private = max(self.peak_private, memory.rss - memory.shared)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self._stop.wait(every_s)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def one(size: int, mode: str, workdir: Path) -> dict[str, Any]:
    """One size in one mode, in this process (run by `main` in a fresh process each)."""
    pool = workdir / f"pool-{size}"
    ontology = str(workdir / "ontology.yaml")
    links = chain_links(ontology)
    out = workdir / f"{'run' if mode == 'engine' else 'bare'}-{size}"
    shutil.rmtree(out, ignore_errors=True)  # a repeat starts afresh: no step to reuse, no file to add to
    started = time.monotonic()
    with WorkerPeak() as workers:
        if mode == "engine":
            committed = run_engine(str(pool), str(out), links)
        else:
            committed = run_bare(str(pool), str(out), links)
    seconds = time.monotonic() - started
    return {
        "seconds": round(seconds, 2),
        "committed": committed,
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "worker_peak_rss_mb": round(workers.peak / 2**20, 1),
        "worker_peak_process": workers.peak_title.split()[0] if workers.peak_title else "",
        "worker_peak_private_mb": round(workers.peak_private / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="image-NP pairs per run")
    ap.add_argument("--workdir", default=None, help="kept when given; a temporary folder otherwise")
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help=f"runs per mode below {ONCE_FROM:,} pairs, alternating engine and bare; the fastest counts",
    )
    ap.add_argument("--one", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-"))
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1], workdir)))
        return {}
    workdir.mkdir(parents=True, exist_ok=True)
    shapes_graph().to_yaml(workdir / "ontology.yaml")
    rows = []
    for size in args.sizes:
        n_images = -(-size // NPS_PER_IMAGE)
        write_pool(workdir / f"pool-{size}", n_images)
        row: dict[str, Any] = {"pairs": n_images * NPS_PER_IMAGE, "images": n_images}
        repeats = args.repeats if size < ONCE_FROM else 1
        for _ in range(repeats):
            for mode in ("engine", "bare"):
                cmd = [sys.executable, __file__, "--workdir", str(workdir), "--one", str(size), mode]
                done = subprocess.run(
                    cmd, check=False, capture_output=True, text=True, env=os.environ | {"RAY_DEDUP_LOGS": "0"}
                )
                if done.returncode != 0:
                    sys.exit(f"{mode} at {size} pairs failed:\n{done.stderr[-4000:]}")
                run = json.loads(done.stdout.strip().splitlines()[-1])
                if mode not in row or run["seconds"] < row[mode]["seconds"]:
                    row[mode] = run
        row["runs_per_mode"] = repeats
        row["pairs_per_s"] = round(row["pairs"] / row["engine"]["seconds"], 1)
        row["engine_vs_bare"] = round(row["bare"]["seconds"] / row["engine"]["seconds"], 3)
        if row["engine"]["committed"] != row["bare"]["committed"]:
            sys.exit(
                f"at {size} pairs the engine committed {row['engine']['committed']} rows, bare Ray Data "
                f"{row['bare']['committed']}: they must do the same work"
            )
        rows.append(row)
        print(
            f"{row['pairs']:>9,} pairs  engine {row['engine']['seconds']:8.1f} s  {row['pairs_per_s']:8.1f} pairs/s  "
            f"driver {row['engine']['driver_peak_rss_mb']:7.1f} MB  worker {row['engine']['worker_peak_rss_mb']:7.1f} MB "
            f"({row['engine']['worker_peak_private_mb']:.1f} MB private)"
            f"  | bare {row['bare']['seconds']:8.1f} s  -> engine/bare throughput {row['engine_vs_bare']:.3f}",
            flush=True,
        )
    first, last = rows[0], rows[-1]
    summary = {
        "bench": "scale",
        "stand_ins": [
            "propose_masks: FastMaskStage (not SAM 3)",
            "ai_verify: FastScoreStage (not the verifiers)",
        ],
        "sizes": rows,
        "driver_rss_growth": round(
            last["engine"]["driver_peak_rss_mb"] / first["engine"]["driver_peak_rss_mb"], 3
        ),
        "time_growth": round(last["engine"]["seconds"] / first["engine"]["seconds"], 2),
        "size_growth": round(last["pairs"] / first["pairs"], 1),
        "min_engine_vs_bare": min(r["engine_vs_bare"] for r in rows),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
