"""The command line: `conceptengine demo | run | status | export | eval`."""

from __future__ import annotations

import faulthandler
import json
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from conceptengine.engine.status import run_status
from conceptengine.engine.store import NotARunError
from conceptengine.output import configure_output

if TYPE_CHECKING:
    from conceptengine.config import EngineConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
# Piped output (CI logs, files) gets a width that fits the round table instead of rich's 80 default.
console = Console() if sys.stdout.isatty() else Console(width=120)

SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override a config key: --set rounds.count=3")
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        help="join this Ray cluster (auto, HOST:6379, ray://HOST:10001); default RAY_ADDRESS, else a private Ray"
    ),
]


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="show third-party logs and warnings (Ray, transformers)")
    ] = False,
) -> None:
    configure_output(verbose)
    # `kill -USR1 PID` prints every thread's stack to stderr and the run goes on: what a stuck step waits on.
    # The process's own stderr: a captured sys.stderr (tests' CliRunner) has no file descriptor.
    faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)


def _address_override(address: str | None) -> list[str]:
    return [f"ray_address={json.dumps(address)}"] if address else []


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def _execute(cfg: EngineConfig, run_dir: str, workspace: Path, resume: bool) -> list[dict]:
    from conceptengine.engine.progress import StepProgress
    from conceptengine.engine.round_steps import BOOTSTRAP_STEPS
    from conceptengine.pipelines.image import run_round, steps_per_round
    from conceptengine.round.driver import run_all, start_run
    from conceptengine.round.report import round_table

    ctx = start_run(cfg, run_dir, workspace, resume)  # checks every input first: a mistake costs ~2 s

    summaries: list[dict] = []
    total = len(BOOTSTRAP_STEPS) + sum(steps_per_round(ctx, r) for r in range(1, cfg.rounds.count + 1))
    try:
        with StepProgress(console, total) as progress:
            ctx.on_step = progress

            def show(summary: dict) -> None:
                summaries.append(summary)
                progress.print(round_table([summary], legend=False))

            run_all(ctx, run_round, on_round=show)
    finally:
        ctx.runner.shutdown()
    console.print(round_table(summaries))
    q = summaries[-1].get("quarantined", 0) if summaries else 0
    if q:
        console.print(
            f"[yellow]{q} media file(s) did not decode and were quarantined[/] (see `conceptengine status {run_dir}`)"
        )
    return summaries


@app.command()
def demo(
    workspace: Annotated[Path, typer.Option(help="folder for the rendered world, models and the run")] = Path(
        "conceptengine-demo"
    ),
    overrides: SetOpt = None,
    resume: Annotated[
        bool, typer.Option(help="continue the demo's run instead of starting it afresh")
    ] = False,
    ray_address: RayAddressOpt = None,
) -> None:
    """Build a rendered world and small models, then run the whole data-engine loop on it (3 rounds)."""
    from conceptengine.config import ConfigError, load_config
    from conceptengine.engine.runner import ResourceConfigError
    from conceptengine.engine.store import RunStoreWriteError
    from conceptengine.pipelines.demo import (
        prepare_demo_workspace,
        retrain_overrides,
        shifted_domain,
        shipped_held_out,
    )
    from conceptengine.round.context import RunError
    from conceptengine.round.report import RENDERED_NOTICE

    console.print(RENDERED_NOTICE)
    try:
        # The concepts the shipped checkpoint never saw are the domain the demo expands into: the NP proposer
        # favours them and gold reports them as their own group, unless told otherwise. Gold also reports
        # the world's shifted look (media.sim.shifted_share), which the shipped checkpoint never saw either.
        # Retraining replays the shipped checkpoint's own training data, so it keeps what it knew.
        held_out = json.dumps(shipped_held_out())
        defaults = [
            f"gold.report_concepts={held_out}",
            f"ontology.focus_concepts={held_out}",
            f"gold.report_domain={shifted_domain()}",
            *retrain_overrides(),
        ]
        cfg = load_config(None, defaults + list(overrides or []) + _address_override(ray_address))
        config_path = prepare_demo_workspace(workspace, cfg, console)
    except ConfigError as exc:
        _fail(str(exc))
    run_dir = workspace / "run"
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)
    try:
        _execute(cfg, str(run_dir), config_path.parent.resolve(), resume)
    except (RunError, ConfigError, ResourceConfigError, RunStoreWriteError) as exc:
        _fail(str(exc))
    console.print(
        f"dataset: {run_dir}/round-*/commit/ (annotations, verdicts, shards; `conceptengine export {run_dir} "
        f"--format webdataset|coco|saco` gathers them)  config: {config_path}"
    )


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="YAML config (see configs/)")],
    run_dir: Annotated[
        str | None, typer.Option(help="run directory (any fsspec URL); default CONFIG_DIR/run")
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue at the first unfinished step")] = False,
    overrides: SetOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Run the data engine from a config; with --resume, continue a crashed or stopped run."""
    from conceptengine.config import ConfigError, load_config
    from conceptengine.engine.runner import ResourceConfigError
    from conceptengine.engine.store import RunStoreWriteError
    from conceptengine.round.context import RunError

    try:
        cfg = load_config(config, list(overrides or []) + _address_override(ray_address))
        workspace = config.parent.resolve()
        _execute(cfg, run_dir or str(workspace / "run"), workspace, resume)
    except (RunError, ConfigError, ResourceConfigError, RunStoreWriteError) as exc:
        _fail(str(exc))


@app.command()
def status(run_dir: Annotated[str, typer.Argument(help="a run directory")]) -> None:
    """Which steps of which rounds are done, each round's summary, and what was quarantined."""
    from conceptengine.round.report import round_table

    try:
        info = run_status(run_dir)
    except NotARunError as exc:
        _fail(str(exc))
    for line in info["lines"]:
        console.print(line)
    if info["summaries"]:
        console.print(round_table(info["summaries"]))


@app.command("export")
def export_cmd(
    run_dir: Annotated[str, typer.Argument(help="a run directory")],
    format: Annotated[str, typer.Option("--format", help="saco | coco | webdataset")] = "saco",
    out: Annotated[str | None, typer.Option(help="output file (saco, coco) or folder (webdataset)")] = None,
) -> None:
    """Export the committed dataset of a run."""
    from conceptengine.pipelines.export import export

    default = {"saco": "saco_gold.json", "coco": "coco_instances.json", "webdataset": "webdataset"}
    target = out or f"{run_dir.rstrip('/')}/export/{default.get(format, format)}"  # a path or an s3:// URL
    try:
        export(run_dir, format, target)
    except ValueError as exc:
        _fail(str(exc))
    console.print(f"wrote {format} export to {target}")


@app.command("eval")
def eval_cmd(
    gold: Annotated[
        str,
        typer.Option("--gold", help="SA-Co/Gold JSON; with --model also a run directory (its gold split)"),
    ],
    pred: Annotated[Path | None, typer.Option("--pred", help="COCO-results JSON to score")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="a SAM 3 checkpoint dir to run on the gold set")
    ] = None,
    ontology: Annotated[
        Path | None, typer.Option(help="concept graph YAML for the per-concept table")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
) -> None:
    """Score predictions (--pred) or a checkpoint (--model) against a gold set: cgF1, IL_MCC, pmF1."""
    from conceptengine.model.saco_io import evaluate_files
    from conceptengine.pipelines.eval_model import evaluate_checkpoint
    from conceptengine.round.context import RunError
    from conceptengine.round.report import rounded

    if (pred is None) == (model is None):
        _fail("give exactly one of --pred (a predictions file) or --model (a checkpoint to run)")
    try:
        if pred is not None:
            if not gold.endswith(".json"):
                _fail(
                    f"--gold {gold}: --pred is scored against the SA-Co/Gold .json file its image ids come from; "
                    "a run directory's gold split is scored with --model"
                )
            m = evaluate_files(gold, str(pred))
        else:
            m, per_concept = evaluate_checkpoint(model, gold, str(ontology) if ontology else None, device)
            console.print(concept_table(per_concept))
    except (ValueError, FileNotFoundError, RunError) as exc:
        _fail(str(exc))
    console.print(
        json.dumps({"cgF1": rounded(m.cgF1, 2), "IL_MCC": rounded(m.IL_MCC, 4), "pmF1": rounded(m.pmF1, 4)})
    )


def concept_table(per_concept: dict) -> Table:
    from conceptengine.round.report import rounded

    table = Table(title="per concept", box=box.SIMPLE_HEAD)
    for col in ("concept", "pairs", "positive", "cgF1", "IL_MCC", "pmF1"):
        table.add_column(col, justify="left" if col == "concept" else "right")
    for name, m in per_concept.items():
        table.add_row(
            name,
            str(m.counts.get("pairs", "")),
            str(m.counts.get("positive_pairs", "")),
            f"{rounded(m.cgF1, 1):.1f}",
            f"{rounded(m.IL_MCC, 3):.3f}",
            f"{rounded(m.pmF1, 3):.3f}",
        )
    return table


@app.command()
def train(
    what: Annotated[str, typer.Argument(help="sam3 | verifier")],
    config: Annotated[Path, typer.Argument(help="training YAML (configs/train-sam3.yaml, ...)")],
    overrides: SetOpt = None,
) -> None:
    """Fine-tune a model: `conceptengine train sam3|verifier CONFIG` (Ray Train; resumes from checkpoints)."""
    from conceptengine.training.sam3_ray import train_sam3_from_yaml

    if what == "verifier":
        return _train_verifier(config, overrides or [])
    if what != "sam3":
        _fail(f"cannot train {what!r}: choose 'sam3' or 'verifier'")

    try:
        out = train_sam3_from_yaml(str(config), overrides or [])
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    console.print(f"saved fine-tuned SAM 3 to {out}")


def _train_verifier(config: Path, overrides: list[str]) -> None:
    """MV or EV verifier on answer choices; prints its agreement with humans on held-out images."""
    from conceptengine.training.verifier_ray import train_verifier_from_yaml
    from conceptengine.verifiers.train_metrics import metrics_table

    try:
        out, metrics = train_verifier_from_yaml(str(config), overrides)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    console.print(metrics_table(metrics["task"], metrics["holdout"]))
    console.print(f"saved fine-tuned {metrics['task'].upper()} verifier to {out} (metrics.json beside it)")


verifier_app = typer.Typer(no_args_is_help=True, help="Verifier tools: `conceptengine verifier serve DIR`.")
app.add_typer(verifier_app, name="verifier")


@verifier_app.command("serve")
def verifier_serve(
    model_dirs: Annotated[list[str], typer.Argument(help="save_pretrained dir(s), served by dir name")],
    host: Annotated[str, typer.Option(help="bind address; 0.0.0.0 serves other machines")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16")] = "auto",
    max_batch: Annotated[int, typer.Option(help="concurrent requests scored in one forward pass")] = 16,
) -> None:
    """Serve verifier checkpoints as an OpenAI-compatible API with logprobs (`verifier.backend: openai`)."""
    from conceptengine.verifiers import serve as verifier_server

    try:
        verifier_server.serve(
            model_dirs, host=host, port=port, device=device, dtype=dtype, max_batch=max_batch
        )
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))


review_app = typer.Typer(
    no_args_is_help=True, help="Human review: `conceptengine review serve RUN`, `add-user`."
)
app.add_typer(review_app, name="review")


@review_app.command("serve")
def review_serve(
    run_dir: Annotated[str, typer.Argument(help="the run whose review queue to serve")],
    host: Annotated[str, typer.Option(help="bind address; 0.0.0.0 serves other machines")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8765,
    tracker: Annotated[
        str | None, typer.Option(help="Sam3TrackerModel dir or id (default: from the run's SAM 3)")
    ] = None,
    device: Annotated[str, typer.Option(help="device for the tracker: cpu, cuda, ...")] = "cpu",
) -> None:
    """Serve the review web app (MV, EV, correction pages and the admin dashboard) for a run's queue."""
    from conceptengine.review.web import server as review_server
    from conceptengine.review.web.run import RunOpenError

    try:
        review_server.serve(run_dir, host=host, port=port, tracker=tracker, device=device)
    except (RunOpenError, ValueError) as exc:
        _fail(str(exc))


@review_app.command("add-user")
def review_add_user(
    run_dir: Annotated[str, typer.Argument(help="the run whose review database holds the accounts")],
    name: Annotated[str, typer.Argument(help="login name: lower-case letters, digits, _ . -")],
    role: Annotated[str, typer.Option(help="reviewer | admin")] = "reviewer",
    kinds: Annotated[
        str, typer.Option(help="task kinds this user reviews, comma-separated")
    ] = "mv,ev,correction",
    replace: Annotated[bool, typer.Option(help="issue a new token for an existing user")] = False,
) -> None:
    """Create a reviewer account and print its token (shown once; only a hash is stored)."""
    from conceptengine.review.web import server as review_server
    from conceptengine.review.web.accounts import AccountError
    from conceptengine.review.web.run import RunOpenError

    try:
        token = review_server.add_user(
            run_dir, name, role, [k.strip() for k in kinds.split(",") if k.strip()], replace
        )
    except (AccountError, RunOpenError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"user {name} ({role}, kinds {kinds}); token, shown once:")
    print(token)


@review_app.command("export")
def review_export(
    run_dir: Annotated[str, typer.Argument(help="the run whose open review tasks to export")],
    out: Annotated[str, typer.Argument(help="folder to write the tool's files into")],
    round_: Annotated[int, typer.Option("--round", help="round whose open tasks to export")],
    fmt: Annotated[str, typer.Option("--format", help="labelstudio | cvat")],
    image_root: Annotated[str | None, typer.Option(help="name images by their path under it")] = None,
    image_prefix: Annotated[str | None, typer.Option(help="labelstudio: URL prefix for images")] = None,
) -> None:
    """Export a round's open tasks with the engine's masks as pre-annotations (Label Studio, CVAT)."""
    from conceptengine.review.interop.run import export_run
    from conceptengine.review.web.run import RunOpenError

    try:
        written = export_run(run_dir, round_, fmt, out, image_root, image_prefix)
    except (RunOpenError, ValueError) as exc:
        _fail(str(exc))
    summary = ", ".join(f"{n} {kind}" for kind, n in written.items()) or "no open tasks"
    console.print(f"exported to {out}: {summary}")


@review_app.command("import")
def review_import(
    run_dir: Annotated[str, typer.Argument(help="the run whose review queue gets the answers")],
    file: Annotated[str, typer.Argument(help="the tool's export: Label Studio JSON or CVAT COCO JSON")],
    fmt: Annotated[str, typer.Option("--format", help="labelstudio | cvat")],
    manifest: Annotated[str | None, typer.Option(help="cvat: the export's conceptengine-tasks.json")] = None,
    annotator: Annotated[str | None, typer.Option(help="record answers as human:NAME")] = None,
) -> None:
    """Import a tool's answers as verdicts; exits 1 if any answer was refused (the rest are kept)."""
    from conceptengine.review.interop.run import import_run
    from conceptengine.review.web.run import RunOpenError

    try:
        report = import_run(run_dir, file, fmt, manifest, annotator)
    except (RunOpenError, ValueError) as exc:
        _fail(str(exc))
    for line in report.errors:
        console.print(f"[red]refused[/red] {line}")
    print(json.dumps(report.as_dict()))
    if report.errors:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
