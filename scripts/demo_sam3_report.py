"""Gold sets, per-concept scores, the leaf confusion and the learning-curve plot of the demo SAM 3 recipe.

Used by scripts/train_demo_sam3.py after each stage. Everything here reads the RENDERED world's ground
truth (leaf, colour, pattern of every instance), which is why it lives beside the script and not in the
engine: a real run has no such oracle.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from conceptengine.engine import rle
from conceptengine.engine.media import load_rgb
from conceptengine.engine.tables import ANNOTATIONS
from conceptengine.model.evaluate import evaluate_by_group, gold_images
from conceptengine.model.metrics import SCORE_THRESHOLD, hungarian_pairs

NO_MATCH = "(none)"  # a detection that covers no instance at IoU >= 0.5


def family_of(graph, node_id: str) -> str | None:
    """The node's ancestor just below the root (polygon, round shape, symbol); None for the root."""
    chain = [node_id, *graph.ancestors(node_id)]
    return chain[-2] if len(chain) >= 2 else None


def leaves(graph) -> list[str]:
    return list(graph.leaves())


def leaf_gold(oracle, media_ids: list[str], annotation_row) -> pa.Table:
    """Every gold image asked for every leaf concept by name: positives where present, else negatives."""
    graph = oracle.graph
    rows = [annotation_row(oracle, m, graph.node(c).name) for m in sorted(media_ids) for c in leaves(graph)]
    return pa.Table.from_pylist(rows, schema=ANNOTATIONS)


def _metrics_dict(m) -> dict:
    return {"cgF1": m.cgF1, "IL_MCC": m.IL_MCC, "pmF1": m.pmF1, "counts": dict(m.counts)}


def evaluate_concepts(detector, table: pa.Table, graph, key: str) -> dict:
    """Overall metrics plus one group per family ('family') or per leaf ('leaf') of each pair's NP."""

    def group_of(noun_phrase: str) -> str | None:
        parsed = graph.resolve(noun_phrase)
        if parsed is None:
            return None
        node = parsed.node_id
        if key == "leaf":
            return graph.node(node).name if not graph.children(node) else None
        fam = family_of(graph, node)
        return graph.node(fam).name if fam else None

    overall, groups = evaluate_by_group(detector, table, group_of)
    return {"overall": _metrics_dict(overall), key: {k: _metrics_dict(v) for k, v in groups.items()}}


def phrase_kind(graph, noun_phrase: str) -> str | None:
    """What an NP asks for: the level of its concept (root, family, group such as "triangle", or leaf) and
    the attribute kinds it names, e.g. "leaf + colour + pattern". None for a phrase the graph cannot parse."""
    parsed = graph.resolve(noun_phrase)
    if parsed is None:
        return None
    node = parsed.node_id
    depth = len(graph.ancestors(node))
    if not graph.children(node):
        level = "leaf"
    else:
        level = {0: "root", 1: "family"}.get(depth, "group")
    return " + ".join([level, *(kind for kind, _ in parsed.modifiers)])


def evaluate_phrase_kinds(detector, table: pa.Table, graph) -> dict:
    """Metrics per `phrase_kind` of the gold pairs: which kind of question the model cannot answer yet."""
    _, groups = evaluate_by_group(detector, table, lambda np_: phrase_kind(graph, np_))
    return {k: _metrics_dict(v) for k, v in groups.items()}


def phrase_kind_markdown(per_kind: dict[str, dict]) -> str:
    lines = [
        "| phrase kind | pairs (positive) | cgF1 | IL_MCC | pmF1 | positives answered |",
        "|---|---|---|---|---|---|",
    ]
    for kind, m in per_kind.items():
        c = m["counts"]
        lines.append(
            f"| {kind} | {c['pairs']} ({c['positive_pairs']}) | {m['cgF1']:.1f} | {m['IL_MCC']:.2f} | "
            f"{m['pmF1']:.2f} | {c['il_tp']} of {c['positive_pairs']} |"
        )
    return "\n".join(lines)


def leaf_confusion(detector, world, media_ids: list[str]) -> dict[str, dict[str, int]]:
    """For each leaf's name as the prompt, which leaf each detection (score >= 0.5) covers at IoU >= 0.5.

    Row = the prompted leaf, column = the leaf of the best-overlapping instance (or NO_MATCH): the
    diagonal is right, the rest shows which siblings the model mixes up.
    """
    graph = world.graph
    names = {leaf: graph.node(leaf).name for leaf in leaves(graph)}
    out: dict[str, Counter] = defaultdict(Counter)
    for media_id in sorted(media_ids):
        rec = world.record(media_id)
        h, w = int(rec["height"]), int(rec["width"])
        image = load_rgb(str(world.image_path(media_id)))
        inst = rec["instances"]
        dets = detector.detect(image, list(names.values()), score_threshold=SCORE_THRESHOLD)
        for leaf, det in zip(names, dets, strict=True):
            if not det.masks:
                continue
            iou = rle.iou_matrix(list(det.masks), [i["rle"] for i in inst], h, w)
            for row in iou:
                best = int(np.argmax(row)) if row.size else -1
                out[leaf][inst[best]["leaf"] if best >= 0 and row[best] >= 0.5 else NO_MATCH] += 1
    return {k: dict(v) for k, v in sorted(out.items())}


def confusion_markdown(confusion: dict[str, dict[str, int]], graph) -> str:
    """A compact table: per prompted leaf, detections that hit it, the top confusions and misses."""
    lines = [
        "| prompt | detections | on the right leaf | most confused with | on no instance |",
        "|---|---|---|---|---|",
    ]
    for leaf in leaves(graph):
        row = confusion.get(leaf, {})
        total = sum(row.values())
        right = row.get(leaf, 0)
        wrong = sorted(((n, k) for k, n in row.items() if k not in (leaf, NO_MATCH)), reverse=True)[:2]
        confused = ", ".join(f"{graph.node(k).name} {n}" for n, k in wrong) or "–"
        share = f"{right} ({100 * right / total:.0f}%)" if total else "0"
        lines.append(f"| {graph.node(leaf).name} | {total} | {share} | {confused} | {row.get(NO_MATCH, 0)} |")
    return "\n".join(lines)


def text_separation(model, inputs, graph) -> dict[str, float]:
    """How far apart the text tower holds the words of one attribute kind: the mean cosine similarity of
    the pooled text features of every pair of phrases that differ in that word alone ("red shape" vs "blue
    shape"; leaves by name). 1.0 means the detector cannot tell from the prompt which one is asked."""
    import torch

    root = graph.roots()[0]
    phrases = {kind: [graph.np_text(root, {kind: v}) for v in graph.attribute_values(kind)]
               for kind in graph.attribute_kinds}  # fmt: skip
    phrases["leaf"] = [graph.node(leaf).name for leaf in leaves(graph)]
    out = {}
    with torch.no_grad():
        for kind, texts in phrases.items():
            tok = inputs.tokens(texts)
            feats = model.get_text_features(**tok).pooler_output  # (P, T, C)
            mask = tok["attention_mask"].unsqueeze(-1).to(feats.dtype)
            pooled = torch.nn.functional.normalize((feats * mask).sum(1) / mask.sum(1), dim=-1)
            sim = pooled @ pooled.T
            out[kind] = round(float(sim[~torch.eye(len(texts), dtype=torch.bool)].mean()), 3)
    return out


def error_kinds(detector, world, table: pa.Table) -> dict[str, dict[str, int]]:
    """Where the errors at IoU 0.5 come from, on the pairs of `table` (detections at score >= 0.5).

    A false positive covers (IoU >= 0.5) an instance the phrase does not name ("wrong object") or a named
    one another detection already matched ("duplicate"), overlaps one only partly ("poorly localised") or
    none ("background"); those of negative pairs are counted apart. A missed instance belongs to a pair with
    no detection at all ("pair not answered"), or has only a partial detection ("poorly localised") or none.
    """
    fp, fn = Counter(), Counter()
    for image, rows in gold_images(table):
        everything = [i["rle"] for i in world.record(rows[0]["media_id"])["instances"]]
        dets = detector.detect(image, [r["noun_phrase"] for r in rows], score_threshold=SCORE_THRESHOLD)
        for row, det in zip(rows, dets, strict=True):
            named = [everything.index(m["rle"]) for m in row["masks"] or []]  # the world's own instances
            if not det.masks:
                fn["pair not answered"] += len(named)
                continue
            # One IoU per (detection, instance of the image); the named instances are some of its columns.
            overlap = rle.iou_matrix(list(det.masks), everything, *image.shape[:2])
            on_named = overlap[:, named]
            hits = [(p, g) for p, g in zip(*hungarian_pairs(on_named), strict=True) if on_named[p, g] >= 0.5]
            found = {g for _, g in hits}
            for g in range(len(named)):
                if g not in found:
                    fn["poorly localised" if on_named[:, g].max() >= 0.1 else "not found"] += 1
            matched = {p for p, _ in hits}
            where = "negative pair: " if row["is_negative"] else ""
            for p in range(len(det.masks)):
                if p in matched:
                    continue
                best = int(np.argmax(overlap[p])) if everything else -1
                best_iou = overlap[p, best] if best >= 0 else 0.0
                if best_iou >= 0.5:
                    kind = "duplicate" if best in named else "wrong object"
                else:
                    kind = "poorly localised" if best_iou >= 0.1 else "background"
                fp[where + kind] += 1
    return {"false_positives": dict(fp.most_common()), "missed": dict(fn.most_common())}


def _call_of(stage: str) -> str:
    """The call a stage belongs to: "call 3" for "stage2-detector (call 3)", "" for the first call's."""
    return stage.partition(" (")[2].removesuffix(")")


def plot_curves(curve: dict, path: Path) -> None:
    """Two panels against cumulative training minutes: stage 1's batch accuracies (leaf, colour, pattern;
    a running mean, one colour per attribute whatever the stage), then gold cgF1 of seen concepts and of the
    held-out family through the detector stages, with each continuation call marked (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    pre = curve.get("pretrain") or []
    for colour, key in zip(("C0", "C1", "C2"), ("acc_leaf", "acc_colour", "acc_pattern")):
        label = key.removeprefix("acc_")
        for stage in dict.fromkeys(p.get("stage", "pretrain") for p in pre):
            pts = [p for p in pre if key in p and p.get("stage", "pretrain") == stage]
            if not pts:
                continue
            # Batch accuracies of a few images swing by +-0.2; a running mean shows the trend.
            window = max(1, min(10, len(pts) // 5))
            smooth = np.convolve([p[key] for p in pts], np.ones(window) / window, mode="valid")
            ax1.plot([p["minutes"] for p in pts][window - 1 :], smooth, color=colour, label=label)
            label = None
    ax1.set_title("stages 1 and 1b: towers (batch accuracy, running mean)")
    ax1.set_xlabel("minutes on 2 CPU cores (cumulative)")
    ax1.set_ylim(0, 1)
    det = curve.get("detector") or []
    labels = {"seen": "seen concepts", "held": "held-out family"}
    for stage in dict.fromkeys(p["stage"] for p in det):
        pts = [p for p in det if p["stage"] == stage]
        minutes = [p["minutes"] for p in pts]
        ax2.plot(minutes, [p["cgF1"] for p in pts], "o-", color="C0", ms=3, label=labels.pop("seen", None))
        ax2.plot(minutes, [p["held_out_cgF1"] for p in pts], "--", color="C3", label=labels.pop("held", None))
    # A continuation call starts where the previous one's last point ends (its stage names say "(call N)").
    for before, p in itertools.pairwise(det):
        call = _call_of(p["stage"])
        if call and call != _call_of(before["stage"]):
            ax2.axvline(before["minutes"], color="grey", lw=0.6, ls=":")
            ax2.annotate(call, (before["minutes"], 1.0), xycoords=("data", "axes fraction"), fontsize=6,
                         va="top", rotation=90)  # fmt: skip
    ax2.set_title("stages 2-3: gold cgF1 (rendered world)")
    ax2.set_xlabel("minutes on 2 CPU cores (cumulative)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left" if ax is ax1 else "center right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
