"""What a person sees: progress while a run works, and a table at the end of every round."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

STEPS_PER_ROUND = 7  # propose_nps, propose_masks, ai_verify, route, human_review, commit, evaluate

RENDERED_NOTICE = (
    "[bold yellow]This demo runs on a RENDERED domain:[/] procedural images of shapes with exact ground "
    "truth, small models the project builds itself, and simulated reviewers. It shows the engine's loop "
    "and its measurements; it is not a real photo dataset."
)

# (header, summary key); headers are short so the table fits an 80-column terminal.
COLUMNS = [
    ("rnd", "round"),
    ("NP+", "pairs_positive"),
    ("NP−", "pairs_negative"),
    ("masks", "masks_proposed"),
    ("auto✓", "auto_accepted"),
    ("auto✗", "auto_rejected"),
    ("human", "to_human"),
    ("human s", "human_seconds"),
    ("commit", "committed_pairs"),
    ("cgF1", "gold_cgF1"),
    ("prec", "precision"),
    ("recall", "recall"),
]
LEGEND = (
    "NP+/NP− image-NP pairs proposed (positive candidates / negatives) · masks: SAM 3 proposals · "
    "auto✓/auto✗/human: verifier routing of masks (MV) and pairs (EV) · human s: simulated reviewer "
    "seconds · commit: pairs committed · cgF1: gold cgF1 of the model · prec/recall: committed masks "
    "vs. ground truth"
)


def round_table(summaries: list[dict]) -> Table:
    table = Table(
        title="conceptengine rounds", caption=LEGEND, box=box.SIMPLE_HEAD, padding=(0, 0), collapse_padding=True
    )
    for title, _ in COLUMNS:
        table.add_column(title, justify="right", no_wrap=True, min_width=len(title) + 1)
    for s in summaries:
        table.add_row(*(_fmt(s.get(key)) for _, key in COLUMNS))
    return table


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"
    return str(v)


class StepProgress:
    """A rich progress bar over a run's steps; plugs into RunContext.on_step."""

    def __init__(self, console: Console, total_steps: int):
        self.progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("starting", total=total_steps)

    def __enter__(self) -> StepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, step: str, phase: str, info: dict) -> None:
        if phase == "start":
            self.progress.update(self.task, description=f"{step} …")
        else:
            note = " (reused)" if info.get("reused") else f" {info.get('seconds', 0):.1f}s"
            self.progress.update(self.task, advance=1, description=f"{step} done{note}")
