"""The demo's workspace: a rendered world, small SAM 3 and verifier checkpoints, the replay set of the SAM 3's
own training data, and its config file.

Built once per workspace and reused: the world is deterministic per seed, and a checkpoint directory
that already exists is never rebuilt (delete it to start over).
"""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import pyarrow as pa
import torch
import yaml
from rich.console import Console

from conceptengine.config import EngineConfig
from conceptengine.model.tiny import build_tiny_sam3
from conceptengine.ontology.graph import ConceptGraph
from conceptengine.round.context import RunInputs
from conceptengine.round.sources import LISTING, RunSources
from conceptengine.sim.base_data import build_replay_set
from conceptengine.sim.captioner import oracle_captioner
from conceptengine.sim.oracle import Oracle
from conceptengine.sim.render import STYLES
from conceptengine.sim.reviewers import SimulatedReviewers
from conceptengine.sim.world import ONTOLOGY_FILE, SHIFTED_DOMAIN, World, build_world, world_spec
from conceptengine.verifiers.grounded.ev_model import GroundedEVConfig, GroundedEVModel
from conceptengine.verifiers.grounded.model import GroundedMVConfig, GroundedMVModel
from conceptengine.verifiers.grounded.slots import ontology_slots


def ontology_vocabulary(graph: ConceptGraph) -> list[str]:
    """Every surface form an NP of this ontology can use: names, synonyms, attribute values."""
    words: set[str] = set()
    for node in graph:
        words.update([node.name, *node.synonyms])
    for kind in graph.attribute_kinds:
        words.update(graph.attribute_values(kind))
    return sorted(words)


# The small SAM 3 trained on the rendered domain by scripts/train_demo_sam3.py, shipped with the package.
SHIPPED_SAM3 = Path(__file__).resolve().parents[1] / "assets" / "sam3-demo"
# The grounded MV and EV scorers (mv/, ev/) trained by scripts/train_demo_grounded_verifiers.py, shipped
# likewise: they read the pixels (verifiers/grounded), where the tiny MLLM of verifier-demo/ did not learn to.
SHIPPED_VERIFIERS = Path(__file__).resolve().parents[1] / "assets" / "verifier-grounded"
DEMO_EV_MODEL = "models/verifier-ev"
# Replay of base data during the demo's retraining (retrain.replay_annotations / replay_share): the first
# DEMO_REPLAY_IMAGES train images of the world the shipped SAM 3 was trained on (sim/base_data.py), with the
# pairs it was trained on, rendered into the workspace. 480 images hold ~5,700 pairs and render in ~15 s:
# enough for every pass of a fine-tune to replay fresh images (retrain.replay_spread).
DEMO_REPLAY_DIR = "replay-world"
DEMO_REPLAY_ANNOTATIONS = f"{DEMO_REPLAY_DIR}/pairs.parquet"
DEMO_REPLAY_IMAGES = 480
# About this share of a fine-tune's images are replay: less replay lets the new family and the shifted look
# gain more and lets seen concepts slip further (README, "What the demo shows today").
DEMO_REPLAY_SHARE = 0.2
# Each candidate's operating point is refitted on this many of those images (retrain.presence_fit_images).
DEMO_PRESENCE_FIT_IMAGES = 60
# The held-out family's words never trained the shipped checkpoint's text tower (stage 1 leaves them out), so
# their embeddings start at their random init and at the detector's rate a short fine-tune barely moves them.
# Only they learn (retrain.freeze_replay_tokens): the words of the replay data, which the checkpoint knows,
# keep their embeddings; moved, they cost seen concepts (README; docs/demo-loop-measurements.md).
DEMO_TOKEN_EMBEDDING_LR_SCALE = 10.0


def retrain_overrides() -> list[str]:
    """`--set` defaults of `conceptengine demo`: retraining replays the shipped checkpoint's own data,
    refits each candidate's operating point on it and trains only new words' token embeddings, faster, and
    verifier retraining retrains MV only (the user's overrides come after them, e.g. retrain.replay_share=0
    retrain.presence_fit_images=0 to replay nothing, verifier_retrain.tasks=[mv,ev] to retrain EV too)."""
    return [
        f"retrain.replay_annotations={DEMO_REPLAY_ANNOTATIONS}",
        f"retrain.replay_share={DEMO_REPLAY_SHARE}",
        f"retrain.presence_fit_images={DEMO_PRESENCE_FIT_IMAGES}",
        f"retrain.token_embedding_lr_scale={DEMO_TOKEN_EMBEDDING_LR_SCALE}",
        "retrain.freeze_replay_tokens=true",
        # Round 3's EV retrain never beat the shipped EV on the demo's human EV verdicts (hold-out NLL 0.4673
        # against 0.4672) and is 85% of that step (73 of 86 s): the demo retrains MV only.
        "verifier_retrain.tasks=[mv]",
    ]


def shifted_domain() -> str:
    """The media domain of the demo world's shifted look, reported by `conceptengine demo` as its own
    gold group (gold.report_domain)."""
    return SHIFTED_DOMAIN


def shipped_held_out() -> list[str]:
    """Concepts kept out of the shipped checkpoint's training: the domain the demo's loop expands into."""
    path = SHIPPED_SAM3 / "held_out.json"
    return json.loads(path.read_text()) if path.exists() else []


def install_verifier(target: Path, task: str, graph: ConceptGraph, seed: int, console: Console) -> None:
    """Copy the shipped grounded `task` scorer to `target`; without shipped weights, save an untrained one
    over the ontology's slots."""

    if target.exists():
        return
    shipped = SHIPPED_VERIFIERS / task
    if (shipped / "model.safetensors").exists():
        shutil.copytree(shipped, target)
        return
    with console.status(f"building an untrained grounded {task.upper()} scorer"):
        torch.manual_seed(seed)
        slots = ontology_slots(graph)
        if task == "mv":
            GroundedMVModel(GroundedMVConfig(slots=slots)).save_pretrained(target)
        else:
            GroundedEVModel(GroundedEVConfig(slots=slots)).save_pretrained(target)


def prepare_demo_workspace(workspace: Path, cfg: EngineConfig, console: Console) -> Path:
    """Render the world and install the checkpoints; with the demo's retrain settings (`retrain_overrides`)
    and retraining on, render the replay set too (what fine-tunes replay and fit their operating point on).
    Points `cfg.verifier` at separate MV and EV checkpoints (the demo ships one per task) unless the config
    already names an EV model or uses a served backend."""

    workspace.mkdir(parents=True, exist_ok=True)
    world_dir = workspace / cfg.media.world_dir
    sim = cfg.media.sim
    args = (sim.n_train, sim.n_gold, cfg.seed, sim.image_size, sim.n_corrupt)
    kwargs = {"style": STYLES[sim.style], "shifted_share": sim.shifted_share}
    built = World.load(world_dir) if (world_dir / "ground_truth.parquet").exists() else None
    # A world built with other settings (or before they were recorded) is rendered again: same seed, so
    # the images it shares with the requested world come out byte-identical.
    if built is None or built.spec != world_spec(*args, **kwargs):
        with console.status("rendering the demo world"):
            build_world(world_dir, *args, **kwargs)
    world = World.load(world_dir)
    vocabulary = ontology_vocabulary(world.graph)
    sam3_dir = workspace / cfg.sam3.model
    if not sam3_dir.exists():
        if (SHIPPED_SAM3 / "model.safetensors").exists():
            shutil.copytree(SHIPPED_SAM3, sam3_dir, ignore=shutil.ignore_patterns("train_log.jsonl"))
        else:  # a checkout without the shipped weights: an untrained model of the same architecture
            with console.status("building the small SAM 3 checkpoint"):
                build_tiny_sam3(str(sam3_dir), vocabulary, seed=cfg.seed)
    retrain = cfg.retrain
    uses_replay = retrain.replay_share > 0 or retrain.presence_fit_images > 0
    if retrain.enabled and uses_replay and retrain.replay_annotations == DEMO_REPLAY_ANNOTATIONS:
        with console.status("rendering the replay set (the shipped SAM 3's own training images)"):
            build_replay_set(workspace / DEMO_REPLAY_DIR, DEMO_REPLAY_IMAGES)
    if cfg.verifier.backend == "transformers":
        if cfg.verifier.ev_model is None:
            cfg.verifier.ev_model = DEMO_EV_MODEL
        install_verifier(workspace / cfg.verifier.model, "mv", world.graph, cfg.seed, console)
        install_verifier(workspace / cfg.verifier.ev_model, "ev", world.graph, cfg.seed, console)
    config_path = workspace / "demo.yaml"
    config_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return config_path


def demo_sources(inputs: RunInputs) -> RunSources:
    """`media.source: sim`: the rendered world at `media.world_dir` is the pool, its oracle gives the gold set,
    the captions (at ontology.captioner_recall / captioner_noise) and the committed data's ground truth, and
    `review.simulated_reviewers` simulated reviewers answer the queue from it."""
    cfg = inputs.cfg
    world_dir = inputs.resolve(cfg.media.world_dir)
    oracle = Oracle(world_dir)  # loads the world when first asked: a run without one fails where it reads it
    review = cfg.review
    reviewers = None
    if review.simulated_reviewers > 0:
        reviewers = SimulatedReviewers(
            world_dir,
            review.simulated_reviewers,
            review.error_rate,
            cfg.seed,
            review.cost,
            review.lease_ttl_s,
        )
    gold = partial(
        oracle.gold_annotations,
        split="gold",
        nps_per_image=cfg.gold.nps_per_image,
        negative_share=cfg.gold.negative_share,
        seed=cfg.seed,
    )
    return RunSources(
        list_media=lambda: pa.Table.from_pylist(World.load(world_dir).listing(), LISTING),
        gold_annotations=gold,
        captioner=partial(
            oracle_captioner, world_dir, cfg.ontology.captioner_recall, cfg.ontology.captioner_noise, cfg.seed
        ),
        reviewers=reviewers,
        ground_truth=oracle,
        ontology_path=str(Path(world_dir) / ONTOLOGY_FILE),
    )
