"""Retrain the MV / EV verifiers on a run's human verdicts, for the round pipeline to call on a cadence.

SAM 3's engine retrained its verifiers as human labels accumulated; this is that training, which the round's
RETRAIN_VERIFIERS step (round/retrain_verifiers.py) runs on a cadence. Each call fine-tunes the current checkpoint of each task on
every human verdict of rounds <= r (an MLLM with LoRA by default; a grounded scorer with its own trainer),
and scores both the candidate and the current checkpoint on the same held-out images, so the caller can
promote only a candidate that agrees better with the humans (`RetrainedVerifier.improved`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conceptengine.engine.checkpoints import local_checkpoint
from conceptengine.engine.store import RunStore
from conceptengine.training.grounded_finetune import GroundedFinetuneConfig, finetune
from conceptengine.training.verifier import METRICS_FILE, TrainVerifierConfig, resolve_device
from conceptengine.training.verifier_ray import train_verifier_ray
from conceptengine.verifiers.grounded.backend import grounded_task
from conceptengine.verifiers.train_data import examples_from_run, split_examples
from conceptengine.verifiers.train_eval import evaluate_examples

log = logging.getLogger(__name__)


class VerifierRetrainConfig(BaseModel):
    """What to retrain from, and the trainer's settings (any `TrainVerifierConfig` field under `train`)."""

    model_config = ConfigDict(extra="forbid")

    mv_checkpoint: str  # the promoted MV verifier
    ev_checkpoint: str | None = None  # the promoted EV verifier; None: the MV checkpoint serves both
    tasks: list[Literal["mv", "ev"]] = ["mv", "ev"]
    min_examples: int = Field(32, ge=1)  # fewer human verdicts of a task than this: that task is skipped
    seed: int = 0
    # e.g. {steps: 100, lr: 2e-4, lora_rank: 8, view_size: 112, num_workers: 0}; for a grounded checkpoint
    # the fields of grounded.finetune.GroundedFinetuneConfig (steps, batch_size, lr, holdout_share, split_seed)
    train: dict[str, Any] = {}


@dataclass(frozen=True)
class RetrainedVerifier:
    task: str
    path: str  # the candidate checkpoint (save_pretrained dir, merged weights)
    base: str  # the checkpoint it was trained from
    examples: int
    metrics: dict  # hold-out agreement of the candidate (train_metrics.agreement_metrics)
    base_metrics: dict  # the same, for the base checkpoint on the same hold-out items

    @property
    def improved(self) -> bool:
        """Lower hold-out NLL: a proper score, so it rewards calibration as well as accuracy."""
        new, old = self.metrics.get("nll"), self.base_metrics.get("nll")
        return self.metrics.get("n", 0) > 0 and new is not None and old is not None and new < old


def candidate_rel(task: str, r: int) -> tuple[str, ...]:
    return ("models", f"verifier-{task}", f"v{r:04d}")


def retrain_verifiers(
    store: RunStore | str, r: int, cfg: VerifierRetrainConfig
) -> dict[str, RetrainedVerifier]:
    """Fine-tune each task's verifier on the human verdicts of rounds <= r; returns the candidates by task.

    Candidates go to RUN/models/verifier-<task>/vRRRR (a deterministic name: calling again after a crash
    resumes from the trainer's checkpoints there). Tasks with fewer than `min_examples` verdicts are skipped.
    """
    store = RunStore(store) if isinstance(store, str) else store
    examples = examples_from_run(store, up_to_round=r)
    out: dict[str, RetrainedVerifier] = {}
    for task in cfg.tasks:
        base = cfg.mv_checkpoint if task == "mv" or cfg.ev_checkpoint is None else cfg.ev_checkpoint
        table = examples.filter(pc.equal(examples["task"], task))
        if table.num_rows < cfg.min_examples:
            log.info(
                "round %d: %d human %s verdicts < min_examples; %s not retrained",
                r,
                table.num_rows,
                task,
                task,
            )
            continue
        local_base = local_checkpoint(base)  # a remote run's earlier candidate: its local mirror
        target = store.workdir(*candidate_rel(task, r))  # published to the run once trained
        if grounded_task(local_base) is not None:  # a grounded scorer: its own fine-tune, its own settings
            try:
                settings = GroundedFinetuneConfig.from_train(cfg.train)
            except ValidationError as exc:
                bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ValueError(
                    f"verifier retrain train settings for the grounded scorer {base}: {bad}"
                ) from None
            candidate, base_metrics = finetune(local_base, table, target, settings, seed=cfg.seed + r)
            path = store.publish_dir(target, *candidate_rel(task, r))
            out[task] = RetrainedVerifier(task, path, base, table.num_rows, candidate, base_metrics)
            continue
        # beside, never inside, the checkpoint
        data = Path(store.workdir("models", f"verifier-{task}", f"examples-v{r:04d}.parquet"))
        data.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, data)
        train_cfg = TrainVerifierConfig.model_validate(
            {
                "seed": cfg.seed + r,
                **cfg.train,
                "task": task,
                "init_checkpoint": local_base,
                "output_dir": target,
            }
            | {"examples": str(data)}
        )
        train_verifier_ray(train_cfg)
        metrics = _read_metrics(target)
        _, holdout = split_examples(table, train_cfg.holdout_share, train_cfg.split_seed)
        device = str(resolve_device(train_cfg))
        base_metrics = evaluate_examples(
            local_base, holdout, task, train_cfg.view_size, device, train_cfg.eval_batch_size,
            train_cfg.max_eval_examples, train_cfg.split_seed,
        )  # fmt: skip
        path = store.publish_dir(target, *candidate_rel(task, r))
        out[task] = RetrainedVerifier(task, path, base, table.num_rows, metrics["holdout"], base_metrics)
    return out


def _read_metrics(model_dir: str) -> dict:
    return json.loads((Path(model_dir) / METRICS_FILE).read_text())
