"""Drive a whole run: snapshot the config, bootstrap round 0, then run (or resume) every round."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from conceptengine.config import EngineConfig
from conceptengine.engine.checkpoints import is_remote
from conceptengine.engine.model_refs import ModelUnavailable
from conceptengine.engine.round_steps import RoundSummary
from conceptengine.engine.runner import make_runner
from conceptengine.engine.steps import StepResult
from conceptengine.engine.store import RunStore
from conceptengine.ontology.graph import ConceptGraph, OntologyError
from conceptengine.round.bootstrap import gold, ingest
from conceptengine.round.context import RunContext, RunError, RunInputs, resolve
from conceptengine.round.evaluate import evaluate_round
from conceptengine.round.registry import initial_version
from conceptengine.round.retrain_sam3 import replay_path
from conceptengine.round.sources import pool_uris


def check_models(ctx: RunInputs) -> None:
    """Fail before anything starts when a checkpoint is neither a folder nor a hub model this machine can
    get (served verifiers are checked by the ai_verify step, which names the server when it cannot reach
    it). Hub ids are downloaded here, once, into the Hugging Face cache."""
    try:
        checkpoints = [("sam3.model", ctx.sam3_path)]
        if ctx.cfg.ontology.positives_from == "model":
            checkpoints.append(("ontology.captioner_model", ctx.captioner_model_path))
        if ctx.cfg.verifier.backend != "openai":
            checkpoints.append(("verifier.model", ctx.verifier_path))
            if ctx.ev_model_path:
                checkpoints.append(("verifier.ev_model", ctx.ev_model_path))
    except ModelUnavailable as exc:
        raise RunError(str(exc)) from None
    for what, path in checkpoints:
        if "://" not in path and not Path(path).is_dir():
            raise RunError(
                f"{what}: no checkpoint directory at {path}. Point it at a save_pretrained folder or a hub id "
                "such as facebook/sam3 (or run `conceptengine demo`, which builds small ones)."
            )


def check_concepts(ctx: RunInputs) -> None:
    """Fail before round 1 when ontology.focus_concepts or gold.report_concepts names no concept."""
    cfg = ctx.cfg
    if not (cfg.ontology.focus_concepts or cfg.gold.report_concepts) or not Path(ctx.ontology_path).is_file():
        return  # a missing ontology file is reported by the step that reads it

    graph = ConceptGraph.from_yaml(ctx.ontology_path)
    try:
        graph.subtrees(cfg.ontology.focus_concepts, "ontology.focus_concepts")
        graph.subtrees(cfg.gold.report_concepts, "gold.report_concepts")
    except OntologyError as exc:
        raise RunError(f"{exc} ({ctx.ontology_path})") from None


def check_replay(ctx: RunInputs) -> None:
    """Fail before round 1 when retraining would replay base data from a local path that does not exist
    (a URL is checked by the trainer, which names it)."""

    path = replay_path(ctx) if ctx.cfg.retrain.enabled else None
    if path is not None and "://" not in path and not Path(path).exists():
        raise RunError(
            f"retrain.replay_annotations: nothing at {path}. Point it at an ANNOTATIONS Parquet file or "
            "directory of data the SAM 3 checkpoint was trained on, or set retrain.replay_share and "
            "retrain.presence_fit_images to 0."
        )


def check_pool(ctx: RunInputs) -> None:
    """Fail before anything starts when a team's pool (`media.source: files`) names a local file that is not
    there or an image glob that matches nothing (URLs are read, and named when they fail, by their steps)."""
    cfg = ctx.cfg
    if cfg.media.source != "files":
        return
    captions = cfg.ontology.captions_path if cfg.ontology.positives_from == "file" else None
    for key, value in (
        ("ontology.path", cfg.ontology.path),
        ("ontology.captions_path", captions),
        ("media.gold_json", cfg.media.gold_json),
    ):
        if value is None:
            continue
        path = resolve(ctx.workspace, value)
        if "://" not in path and not Path(path).is_file():
            raise RunError(f"{key}: no file at {path}")
    pool = resolve(ctx.workspace, cfg.media.uri or "")
    if "://" not in pool and not pool_uris(pool):
        raise RunError(f"media.uri: no image at {pool} (a folder, a glob or a .txt list of image URIs)")


def check_run_dir(run_url: str, review_url: str | None) -> None:
    """Fail before anything starts when a local run directory cannot be created or written, or when a remote
    one has no review queue (SQLite needs a local file: a remote run's queue is a database, review.url)."""
    if is_remote(run_url):
        if not review_url:
            raise RunError(
                f"run dir {run_url} is remote, so its review queue cannot be SQLite inside it: set review.url "
                "to a database (e.g. postgresql+psycopg://USER:PASSWORD@HOST/DB)"
            )
        return
    existing = Path(run_url.removeprefix("file://")).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"run dir {run_url}: cannot write under {existing}; choose another --run-dir")


def start_run(cfg: EngineConfig, run_url: str, workspace: Path, resume: bool) -> RunContext:
    # What the config points at is checked first: a mistake costs no Ray start and leaves no run directory.
    inputs = RunInputs(cfg, workspace)
    check_run_dir(run_url, cfg.review.url)
    check_pool(inputs)
    check_models(inputs)
    check_concepts(inputs)
    check_replay(inputs)
    store = RunStore(run_url)
    snapshot = store.read_json("run.json")
    if snapshot and not resume:
        raise RunError(f"{run_url} already holds a run; pass --resume to continue it or choose a new run dir")
    if snapshot and snapshot["config_hash"] != cfg.config_hash():
        raise RunError(
            f"{run_url} was started with a different config (hash {snapshot['config_hash']}); "
            "resume it with the same config, or start a new run dir"
        )
    ctx = RunContext(cfg, store, make_runner(cfg.runner, cfg.ray_num_cpus, cfg.ray_address), workspace)
    if not snapshot:
        store.write_json(
            "run.json",
            {
                "config": cfg.model_dump(mode="json"),
                "config_hash": ctx.config_hash,
                "workspace": str(workspace),
            },
        )
    return ctx


RoundFn = Callable[[RunContext, int, StepResult, StepResult], RoundSummary]


def run_all(
    ctx: RunContext, run_round: RoundFn, on_round: Callable[[RoundSummary], None] | None = None
) -> list[RoundSummary]:
    """`run_round` is a pipeline's composition of steps (pipelines/image.py for image runs)."""
    media = ingest(ctx)
    gold_set = gold(ctx, media)
    quarantined = media.manifest.get("extra", {}).get("quarantined", 0)
    summaries: list[RoundSummary] = []

    def finish(summary: RoundSummary) -> None:
        summary["quarantined"] = quarantined
        ctx.store.write_json(f"round-{summary['round']:04d}/summary.json", summary)
        summaries.append(summary)
        if on_round:
            on_round(summary)

    start = evaluate_round(ctx, 0, gold_set, None, initial_version(ctx))
    no_retrain = {"candidate_cgF1": None, "promoted": None}  # round 0 only evaluates the starting checkpoint
    finish({"round": 0} | no_retrain | {k: v for k, v in start.manifest["extra"].items() if k != "seconds"})
    for r in range(1, ctx.cfg.rounds.count + 1):
        finish(run_round(ctx, r, media, gold_set))
    return summaries
