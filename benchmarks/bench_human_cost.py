"""Simulated human-seconds per committed pair: the all-human pipeline vs the engine with AI verifiers.

The same rendered pool runs twice with everything else equal (same world, SAM 3 checkpoint, NP proposals,
simulated reviewers and seeds):
- all-human: `routing.mode=human`, every mask and pair goes to the simulated reviewers;
- engine: the MV / EV verifiers with calibrated routing (`routing.mode=calibrated`, the default), so only
  what the verifiers are unsure of, plus the audit share, reaches humans.
SAM 3 retraining is off in both, so both runs see exactly the same proposals. The simulated reviewers
charge the paper's per-task seconds (review/cost.py), and the committed annotations are checked
against the rendered ground truth, so the comparison is at measured precision.

Round 1 of the engine is all-human by construction (calibrated routing has no data yet), so the headline
ratio is over the rounds after it ("steady state"); all rounds are reported too. The paper measured
50 s -> 23 s per pair (2.2x). The last line printed is one JSON object with every figure.

This is a RENDERED domain with simulated reviewers; the figures measure the engine's routing, not real
annotators.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa
from rich.console import Console

from conceptengine.config import load_config
from conceptengine.engine.round_steps import Step
from conceptengine.engine.store import StepRef
from conceptengine.pipelines.demo import prepare_demo_workspace
from conceptengine.pipelines.image import run_round
from conceptengine.round.driver import run_all, start_run
from conceptengine.round.evaluate import committed_quality
from conceptengine.round.report import round_table
from conceptengine.sim.oracle import Oracle

MODES = {"all_human": "human", "engine": "calibrated"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4, help="rounds per run (>= 2: round 1 is all-human)")
    ap.add_argument("--images-per-round", type=int, default=40, help="new pool images each round takes")
    ap.add_argument("--runner", choices=["local", "ray"], default="local")
    ap.add_argument("--workdir", default=None, help="kept when given; a temporary folder otherwise")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override a.b=c")
    args = ap.parse_args(argv)
    if args.rounds < 2:
        ap.error("--rounds must be >= 2: the engine's first round has no calibration data yet")
    if args.images_per_round < 1:
        ap.error("--images-per-round must be >= 1")
    return args


def _totals(summaries: list[dict], annotations: pa.Table, oracle: Oracle) -> dict:
    seconds = sum(s.get("human_seconds") or 0.0 for s in summaries)
    pairs = sum(s.get("committed_pairs") or 0 for s in summaries)
    seen = [s["human_share"] for s in summaries if s.get("human_share") is not None]
    return {
        "rounds": [s["round"] for s in summaries],
        "human_seconds": round(seconds, 1),
        "committed_pairs": pairs,
        "seconds_per_pair": round(seconds / pairs, 2) if pairs else None,
        "human_share_per_round": [round(v, 4) for v in seen],
        **committed_quality(annotations, oracle),
    }


def run_mode(name: str, workspace: Path, args: argparse.Namespace, console: Console) -> dict:
    overrides = [
        f"rounds.count={args.rounds}",
        f"rounds.images_per_round={args.images_per_round}",
        f"media.sim.n_train={args.images_per_round * args.rounds}",
        f"runner={args.runner}",
        "retrain.enabled=false",
        *args.overrides,
        f"routing.mode={MODES[name]}",  # last: the one difference between the two runs
    ]
    cfg = load_config(None, overrides)
    config_path = prepare_demo_workspace(workspace, cfg, console)
    run_dir = workspace / f"run-{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    ctx = start_run(cfg, str(run_dir), config_path.parent.resolve(), resume=False)
    try:
        summaries = [s for s in run_all(ctx, run_round) if s.get("round", 0) >= 1]
    finally:
        ctx.runner.shutdown()
    console.print(f"[bold]{name}[/]")
    console.print(round_table(summaries))
    oracle = Oracle(ctx.inputs.resolve(cfg.media.world_dir))
    by_round = {
        s["round"]: ctx.store.read_step(StepRef(s["round"], Step.COMMIT), "annotations") for s in summaries
    }
    steady = [s for s in summaries if s["round"] >= 2]
    return {
        "wall_s": round(time.perf_counter() - t0, 1),
        "all_rounds": _totals(summaries, pa.concat_tables(by_round.values()), oracle),
        "steady_state": _totals(steady, pa.concat_tables([by_round[s["round"]] for s in steady]), oracle),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    console = Console(stderr=True)
    workspace = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-human-cost-"))
    try:
        runs = {name: run_mode(name, workspace, args, console) for name in MODES}
    finally:
        if not args.workdir:
            shutil.rmtree(workspace, ignore_errors=True)
    figures = {
        "rendered_domain": True,
        "rounds": args.rounds,
        "images_per_round": args.images_per_round,
        **runs,
        "ratio": _ratio(
            runs["all_human"]["steady_state"]["seconds_per_pair"],
            runs["engine"]["steady_state"]["seconds_per_pair"],
        ),
        "ratio_all_rounds": _ratio(
            runs["all_human"]["all_rounds"]["seconds_per_pair"],
            runs["engine"]["all_rounds"]["seconds_per_pair"],
        ),
        "paper_ratio": round(50 / 23, 3),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
