"""The data the shipped demo SAM 3 was trained on, and a replay set drawn from it.

`scripts/train_demo_sam3.py` trains that checkpoint on its own RENDERED world (seed `WORLD_SEED`, plain look,
`style: demo`) with the oracle's pairs minus every pair touching a held-out concept (`DEMO_HELD_OUT`). The
pair rules live here so that the script and the demo's replay set (`build_replay_set`) cannot drift apart:
in-loop fine-tuning replays this base data so the concepts the checkpoint knew are not forgotten.

Why the first K train images of a smaller world are the checkpoint's own: every image is rendered from
`stable_seed(seed, split, index)` (sim/world.py), with no shifted look (share 0), and each image's pairs
are drawn from a generator seeded by (pair seed, media id), so neither depends on how many images the
world has.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from conceptengine.model.train_data import DEMO_HELD_OUT
from conceptengine.sim.oracle import Oracle
from conceptengine.sim.render import STYLES
from conceptengine.sim.world import World, build_world, world_spec

# The shipped checkpoint's training world (scripts/train_demo_sam3.py): seed, image size and scene style.
WORLD_SEED = 20250
WORLD_IMAGE_SIZE = 192
WORLD_STYLE = "demo"
# Its pairs: training_pairs(oracle, nps_per_image=16, seed=0), the script's defaults for both stages.
PAIRS_PER_IMAGE = 16
PAIR_SEED = 0
PAIRS_FILE = "pairs.parquet"
_PAIRS_SPEC = "pairs.json"


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
    """The train split's oracle pairs (half negatives) without any pair touching a held-out concept."""
    table = oracle.gold_annotations(split="train", nps_per_image=nps_per_image, negative_share=0.5, seed=seed)
    keep = [not touches_held_out(oracle, r["media_id"], r["noun_phrase"]) for r in table.to_pylist()]
    return table.filter(pa.array(keep))


def base_world_args(n_images: int) -> tuple[tuple, dict]:
    """`build_world` arguments of the checkpoint's world cut to its first `n_images` train images."""
    return (n_images, 0, WORLD_SEED, WORLD_IMAGE_SIZE), {"style": STYLES[WORLD_STYLE]}


def build_replay_set(out_dir: str | Path, n_images: int) -> Path:
    """Render the first `n_images` train images of the shipped checkpoint's world into `out_dir` and write
    their training pairs (ANNOTATIONS rows, image uris absolute) to OUT_DIR/pairs.parquet; returns its path.

    Built once: a folder that already holds this set (same size, same place) is reused as it is, so repeated
    demo runs and resumed ones replay exactly the same data.
    """
    if n_images < 1:
        raise ValueError(f"build_replay_set: n_images must be >= 1, got {n_images}")
    root = Path(out_dir).resolve()
    args, kwargs = base_world_args(n_images)
    spec = {
        "world": world_spec(*args, **kwargs),
        "root": str(root),  # the pairs name their images by absolute path: a moved folder is rebuilt
        "nps_per_image": PAIRS_PER_IMAGE,
        "pair_seed": PAIR_SEED,
        "held_out": list(DEMO_HELD_OUT),
    }
    pairs, spec_path = root / PAIRS_FILE, root / _PAIRS_SPEC
    if pairs.is_file() and spec_path.is_file() and json.loads(spec_path.read_text()) == spec:
        return pairs
    built = World.load(root) if (root / "ground_truth.parquet").exists() else None
    if built is None or built.spec != spec["world"]:
        build_world(root, *args, **kwargs)
    table = training_pairs(Oracle(root), nps_per_image=PAIRS_PER_IMAGE, seed=PAIR_SEED)
    pq.write_table(table, pairs)
    spec_path.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    return pairs
