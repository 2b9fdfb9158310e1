"""Gold metrics of a SAM 3 version: overall, and for the groups of gold pairs the config asks to report.

- reported: pairs whose NP names one of gold.report_concepts (or a descendant), e.g. a held-out family;
- domain: pairs whose media is of gold.report_domain (the gold table carries each pair's media domain),
  e.g. a shifted domain the model is being adapted to;
- seen: the rest, in neither group: what the model knew before and must not forget.

Results are cached per (version, gold set, groups) under RUN/models/eval/: promotion and the round table
both need them, and a version's weights never change once written.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from conceptengine.engine.steps import StepResult
from conceptengine.engine.store import fingerprint_of
from conceptengine.model.evaluate import predict_gold
from conceptengine.model.metrics import saco_metrics
from conceptengine.model.sam3_backend import Sam3Detector
from conceptengine.ontology.graph import ConceptGraph
from conceptengine.round.context import RunContext
from conceptengine.round.registry import ModelVersion


def concept_grouper(ctx: RunContext) -> Callable[[str], str] | None:
    """NP -> "reported" when it names one of gold.report_concepts (or a descendant), else "other"."""
    names = ctx.cfg.gold.report_concepts
    if not names:
        return None

    graph = ConceptGraph.from_yaml(ctx.ontology_path)
    targets = graph.subtrees(names, "gold.report_concepts")

    def group_of(noun_phrase: str) -> str:
        parsed = graph.resolve(noun_phrase)
        return "reported" if parsed is not None and parsed.node_id in targets else "other"

    return group_of


def pair_groups(
    gold: pa.Table, concept_group: Callable[[str], str] | None, report_domain: str | None
) -> dict[str, set[str]]:
    """pair_ids of each reported group: "reported" (concepts), "domain" (media domain) and "seen" (neither).
    A group that is not configured is left out; "seen" is there when at least one of the others is. A gold
    table without a `domain` column (a run begun before gold carried it) has no domain pairs."""
    if concept_group is None and report_domain is None:
        return {}
    pair_ids = gold["pair_id"].to_pylist()
    nps = gold["noun_phrase"].to_pylist()
    domains = gold["domain"].to_pylist() if "domain" in gold.column_names else [None] * len(pair_ids)
    groups: dict[str, set[str]] = {"seen": set()}
    if concept_group is not None:
        groups["reported"] = set()
    if report_domain is not None:
        groups["domain"] = set()
    for pair, np_, domain in zip(pair_ids, nps, domains, strict=True):
        reported = concept_group is not None and concept_group(np_) == "reported"
        in_domain = report_domain is not None and domain == report_domain
        if reported:
            groups["reported"].add(pair)
        if in_domain:
            groups["domain"].add(pair)
        if not (reported or in_domain):
            groups["seen"].add(pair)
    return groups


def _group_metrics(prefix: str, metrics) -> dict:
    if metrics is None:  # no gold pair in the group
        return {f"{prefix}_cgF1": None, f"{prefix}_IL_MCC": None, f"{prefix}_pmF1": None}
    return {
        f"{prefix}_cgF1": round(metrics.cgF1, 2),
        f"{prefix}_IL_MCC": round(metrics.IL_MCC, 4),
        f"{prefix}_pmF1": round(metrics.pmF1, 4),
    }


def gold_metrics(ctx: RunContext, version: ModelVersion, gold: StepResult) -> dict:
    """gold_* overall; reported_* with gold.report_concepts; domain_* (None when gold.report_domain is not
    set or has no gold pair); seen_* with either of the two."""
    report_domain = ctx.cfg.gold.report_domain
    key = fingerprint_of(
        version.name, version.path, gold.fingerprint, ctx.cfg.gold.report_concepts, report_domain
    )
    cached = ctx.store.read_json(f"models/eval/{version.name}-{key}.json")
    if cached is not None:
        return cached

    detector = Sam3Detector.from_pretrained(version.path, device=ctx.cfg.sam3.device)
    table = gold["gold"]
    gts, preds = predict_gold(detector, table)
    overall = saco_metrics(gts, preds)
    out = {
        "gold_cgF1": round(overall.cgF1, 2),
        "gold_IL_MCC": round(overall.IL_MCC, 4),
        "gold_pmF1": round(overall.pmF1, 4),
        "domain_cgF1": None,
    }
    pred_of = {p.key: p for p in preds}
    for name, members in pair_groups(table, concept_grouper(ctx), report_domain).items():
        gs = [g for g in gts if g.key in members]
        metrics = saco_metrics(gs, [pred_of[g.key] for g in gs]) if gs else None
        if name == "reported" and metrics is None:
            continue  # as before: no reported_* keys without a reported pair
        out |= _group_metrics(name, metrics)
    ctx.store.write_json(f"models/eval/{version.name}-{key}.json", out)
    return out
