"""Score a saved verifier on held-out examples with the engine's own backend and report agreement with humans.

The checkpoint is loaded by `TransformersBackend` from its directory, as the ai_verify stage loads it, so
the numbers describe the model the engine will actually run (after LoRA merging, dtype, processor).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from conceptengine.engine.ids import stable_seed
from conceptengine.verifiers.train_data import TASKS
from conceptengine.verifiers.train_inputs import ExampleDataset
from conceptengine.verifiers.train_metrics import agreement_metrics
from conceptengine.verifiers.transformers_backend import TransformersBackend

CHUNK = 256  # requests rendered at a time: bounds the memory of decoded views


def subsample(table: pa.Table, max_examples: int | None, seed: int) -> pa.Table:
    """A fixed random subset (the same for every checkpoint compared on it)."""
    if max_examples is None or table.num_rows <= max_examples:
        return table
    rng = np.random.default_rng(stable_seed(seed, "eval-subsample"))
    return table.take(np.sort(rng.choice(table.num_rows, max_examples, replace=False)))


def score_examples(backend: TransformersBackend, table: pa.Table, task: str, view_size: int) -> np.ndarray:
    """(N, n_choices) probabilities for the examples, rendered exactly as the ai_verify stage renders."""
    data = ExampleDataset(table, task, view_size)
    letters = list(TASKS[task].letters)
    out = np.zeros((len(data), len(letters)), dtype=np.float32)
    for start in range(0, len(data), CHUNK):
        reqs = [data.request(i) for i in range(start, min(start + CHUNK, len(data)))]
        out[start : start + len(reqs)] = backend.score(
            [r.views for r in reqs], [r.prompt for r in reqs], letters
        )
    return out


def evaluate_examples(
    model_dir: str,
    table: pa.Table,
    task: str,
    view_size: int,
    device: str = "cpu",
    batch_size: int = 32,
    max_examples: int | None = None,
    seed: int = 0,
) -> dict:
    """Agreement metrics (train_metrics.agreement_metrics) of the checkpoint at `model_dir` on `table`."""
    table = subsample(table, max_examples, seed)
    if table.num_rows == 0:
        return agreement_metrics(np.zeros((0, len(TASKS[task]))), [], TASKS[task])
    backend = TransformersBackend(model_dir, device=device, batch_size=batch_size)
    probs = score_examples(backend, table, task, view_size)
    return agreement_metrics(probs, table["choice"].to_pylist(), TASKS[task])
