"""Gold metrics of a SAM 3 version: overall, and for the concept groups the config asks to report.

Results are cached per (version, gold set) under RUN/models/eval/: promotion and the round table both
need them, and a version's weights never change once written.
"""

from __future__ import annotations

from conceptengine.engine.context import RunContext
from conceptengine.engine.registry import ModelVersion
from conceptengine.engine.steps import StepResult
from conceptengine.engine.store import fingerprint_of


def concept_grouper(ctx: RunContext):
    """NP -> "reported" when it names one of gold.report_concepts (or a descendant), else "other"."""
    names = ctx.cfg.gold.report_concepts
    if not names:
        return None
    from conceptengine.ontology.graph import ConceptGraph

    graph = ConceptGraph.from_yaml(ctx.ontology_path)
    targets = graph.subtrees(names, "gold.report_concepts")

    def group_of(noun_phrase: str) -> str:
        parsed = graph.resolve(noun_phrase)
        return "reported" if parsed is not None and parsed.node_id in targets else "other"

    return group_of


def gold_metrics(ctx: RunContext, version: ModelVersion, gold: StepResult) -> dict:
    key = fingerprint_of(version.name, version.path, gold.fingerprint, ctx.cfg.gold.report_concepts)
    cached = ctx.store.read_json(f"models/eval/{version.name}-{key}.json")
    if cached is not None:
        return cached
    from conceptengine.model.evaluate import evaluate_by_group
    from conceptengine.model.sam3_backend import Sam3Detector

    detector = Sam3Detector.from_pretrained(version.path, device=ctx.cfg.sam3.device)
    grouper = concept_grouper(ctx)
    overall, groups = evaluate_by_group(detector, gold["gold"], grouper or (lambda _np: None))
    out = {
        "gold_cgF1": round(overall.cgF1, 2),
        "gold_IL_MCC": round(overall.IL_MCC, 4),
        "gold_pmF1": round(overall.pmF1, 4),
    }
    if "reported" in groups:
        m = groups["reported"]
        out |= {
            "reported_cgF1": round(m.cgF1, 2),
            "reported_IL_MCC": round(m.IL_MCC, 4),
            "reported_pmF1": round(m.pmF1, 4),
        }
    ctx.store.write_json(f"models/eval/{version.name}-{key}.json", out)
    return out
