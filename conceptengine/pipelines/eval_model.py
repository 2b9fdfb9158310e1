"""`conceptengine eval --model DIR --gold RUN_OR_JSON`: run a checkpoint on a gold set, per concept too."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from conceptengine.config import EngineConfig
from conceptengine.engine.model_refs import model_dir
from conceptengine.engine.round_steps import Step
from conceptengine.engine.store import NotARunError, RunStore, StepRef
from conceptengine.model.evaluate import evaluate_by_group
from conceptengine.model.saco_io import read_saco_gold_annotations
from conceptengine.model.sam3_backend import Sam3Detector
from conceptengine.ontology.graph import ConceptGraph
from conceptengine.round.context import RunError, RunInputs


def load_gold(gold: str) -> tuple[pa.Table, str | None]:
    """(gold ANNOTATIONS table, the run's ontology path or None) from a run dir or an SA-Co/Gold JSON."""
    if gold.endswith(".json"):
        return read_saco_gold_annotations(gold), None
    try:
        store = RunStore.existing(gold)
    except NotARunError as exc:
        raise RunError(f"--gold: {exc}; or give an SA-Co/Gold .json file") from None
    snapshot = store.read_json("run.json")
    if not store.manifest(StepRef(0, Step.GOLD)):
        raise RunError(f"--gold {gold}: neither an SA-Co/Gold .json file nor a run with a gold split")
    inputs = RunInputs(EngineConfig.model_validate(snapshot["config"]), Path(snapshot["workspace"]))
    try:
        ontology = inputs.ontology_path
    except RunError:
        ontology = None  # a team's run without an ontology file: NPs are scored as they are
    return store.read_step(StepRef(0, Step.GOLD), "gold"), ontology


def concept_of(ontology: str | None):
    """NP -> its ontology concept's name (so 'red square' and 'square' count together), else the NP."""
    if ontology is None:
        return lambda np_: np_

    graph = ConceptGraph.from_yaml(ontology)

    def group(np_: str) -> str:
        parsed = graph.resolve(np_)
        return graph.node(parsed.node_id).name if parsed else np_

    return group


def evaluate_checkpoint(model: str, gold: str, ontology: str | None = None, device: str = "cpu"):

    table, run_ontology = load_gold(gold)
    detector = Sam3Detector.from_pretrained(model_dir(Path.cwd(), model, "--model"), device=device)
    return evaluate_by_group(detector, table, concept_of(ontology or run_ontology))
