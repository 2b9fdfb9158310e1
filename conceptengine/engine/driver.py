"""Drive a whole run: snapshot the config, bootstrap round 0, then run (or resume) every round."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conceptengine.config import EngineConfig
from conceptengine.engine.bootstrap import gold, ingest
from conceptengine.engine.context import RunContext, RunError
from conceptengine.engine.runner import make_runner
from conceptengine.engine.steps import StepResult
from conceptengine.engine.store import RunStore


def check_models(ctx: RunContext) -> None:
    for what, path in (("sam3.model", ctx.sam3_path), ("verifier.model", ctx.verifier_path)):
        if "://" not in path and not Path(path).is_dir() and not _looks_like_hub_id(path):
            raise RunError(
                f"{what}: no checkpoint directory at {path}. Point it at a save_pretrained folder "
                "(or run `conceptengine demo`, which builds small ones)."
            )


def _looks_like_hub_id(path: str) -> bool:
    return path.count("/") == 1 and not path.startswith((".", "/"))


def model_version(ctx: RunContext) -> str:
    """The promoted SAM 3 version; until retraining lands (a later issue) it is the configured checkpoint."""
    return Path(ctx.sam3_path).name or ctx.sam3_path


def start_run(cfg: EngineConfig, run_url: str, workspace: Path, resume: bool) -> RunContext:
    store = RunStore(run_url)
    snapshot = store.read_json("run.json")
    if snapshot and not resume:
        raise RunError(f"{run_url} already holds a run; pass --resume to continue it or choose a new run dir")
    if snapshot and snapshot["config_hash"] != cfg.config_hash():
        raise RunError(
            f"{run_url} was started with a different config (hash {snapshot['config_hash']}); "
            "resume it with the same config, or start a new run dir"
        )
    ctx = RunContext(cfg, store, make_runner(cfg.runner, cfg.ray_num_cpus), workspace)
    check_models(ctx)
    if not snapshot:
        store.write_json(
            "run.json",
            {"config": cfg.model_dump(mode="json"), "config_hash": ctx.config_hash, "workspace": str(workspace)},
        )
    return ctx


RoundFn = Callable[[RunContext, int, StepResult, StepResult, str], dict]


def run_all(ctx: RunContext, run_round: RoundFn, on_round: Callable[[dict], None] | None = None) -> list[dict]:
    """`run_round` is a pipeline's composition of steps (pipelines/image.py for image runs)."""
    media = ingest(ctx)
    gold_set = gold(ctx, media)
    summaries = []
    for r in range(1, ctx.cfg.rounds.count + 1):
        summary = run_round(ctx, r, media, gold_set, model_version(ctx))
        summary["quarantined"] = media.manifest.get("extra", {}).get("quarantined", 0)
        summaries.append(summary)
        ctx.store.write_json(f"round-{r:04d}/summary.json", summary)
        if on_round:
            on_round(summary)
    return summaries
