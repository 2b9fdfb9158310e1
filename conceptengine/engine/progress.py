"""Progress while a run works: a live bar on a terminal, one plain line per finished step otherwise (CI
logs, files). Each finished step shows its counts; a training step shows its own steps, loss and ETA,
read from the train_log.jsonl its trainer writes (rank 0 on a shared filesystem, or this process)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Self

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

# Plain output prints a training step's progress at most this often (a live bar shows every update).
PLAIN_TRAINING_EVERY_S = 30.0


def step_counts(info: dict) -> str:
    """' · pairs 470 · images 80' from a finished step's table rows and the numbers its manifest records."""
    parts = [f"{name} {n}" for name, n in (info.get("rows") or {}).items()]
    for key, value in (info.get("extra") or {}).items():
        if key == "seconds" or isinstance(value, bool):
            continue
        if isinstance(value, int):
            parts.append(f"{key} {value}")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.2f}")
    return "".join(f" · {p}" for p in parts)


class TrainingWatch:
    """Polls a trainer's train_log.jsonl and reports 'step 60/150 · loss 1.234 · ETA 0:00:45'."""

    def __init__(self, path: str, steps: int, report: Callable[[str], None], poll_s: float = 1.0):
        self.path, self.steps, self.report, self.poll_s = Path(path), steps, report, poll_s
        self._stop = threading.Event()
        self._offset = 0
        self._thread = threading.Thread(target=self._run, name="training-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            last = self._read_new()
            if last is not None:
                self.report(self.describe(last))

    def _read_new(self) -> dict | None:
        """The newest complete record appended since the last poll (a resumed trainer appends too)."""
        if not self.path.is_file():
            return None
        with self.path.open() as f:
            f.seek(self._offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind("\n") + 1]  # a line still being written waits for the next poll
        self._offset += len(complete)
        lines = [line for line in complete.splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else None

    def describe(self, rec: dict) -> str:
        step = int(rec.get("step", 0))
        text = f"step {step}/{self.steps}"
        if "loss" in rec:
            text += f" · loss {rec['loss']:.3f}"
        if step and rec.get("sec"):
            eta = rec["sec"] / step * max(self.steps - step, 0)
            text += f" · ETA {timedelta(seconds=round(eta))}"
        return text


class StepProgress:
    """Plugs into RunContext.on_step: phases "start", "training" (info: train_log, steps) and "done"
    (info: seconds, reused, rows, extra)."""

    def __init__(self, console: Console, total_steps: int):
        self.console = console
        self.live = console.is_terminal
        self.total, self.finished = total_steps, 0
        self.progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not self.live,
        )
        self.task = self.progress.add_task("starting", total=total_steps)
        self._watch: TrainingWatch | None = None
        self._last_plain = 0.0

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop_watch()
        self.progress.stop()

    def print(self, renderable) -> None:
        """Print above the live bar (or plainly)."""
        self.progress.console.print(renderable)

    def __call__(self, step: str, phase: str, info: dict) -> None:
        if phase == "start":
            self.progress.update(self.task, description=f"{step} …")
        elif phase == "training":
            self._stop_watch()
            self._watch = TrainingWatch(
                info["train_log"], info["steps"], lambda text: self._training(step, text)
            )
        else:
            self._stop_watch()
            self.finished += 1
            timing = "reused" if info.get("reused") else f"{info.get('seconds', 0):.1f}s"
            line = f"{step} done {timing}{step_counts(info)}"
            self.progress.update(self.task, advance=1, description=line)
            if not self.live:
                self.console.print(f"[{self.finished}/{self.total}] {line}", highlight=False, markup=False)

    def _training(self, step: str, text: str) -> None:
        self.progress.update(self.task, description=f"{step} {text}")
        now = time.monotonic()
        if not self.live and now - self._last_plain >= PLAIN_TRAINING_EVERY_S:
            self._last_plain = now
            self.console.print(f"{step} {text}", highlight=False, markup=False)

    def _stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
