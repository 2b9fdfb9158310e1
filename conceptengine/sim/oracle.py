"""The oracle: exact answers about the RENDERED world, for simulated reviewers, gold sets and metrics.

It answers any noun phrase the ontology can parse, exhaustively and with hierarchy closure: "polygon"
matches every square, triangle, hexagon..., "red polygon" the red ones among them, and a synonym
("disk") answers like its concept ("circle"). An NP the ontology cannot parse matches nothing, which
is the honest answer for a world that only contains shapes.
"""

from __future__ import annotations

import itertools
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa

from conceptengine.engine import ids
from conceptengine.engine.rle import box_xyxy
from conceptengine.engine.tables import ANNOTATIONS
from conceptengine.ontology.graph import ConceptGraph, ParsedNP
from conceptengine.ontology.negatives import np_candidates
from conceptengine.sim.world import World


class Oracle:
    """Exact answers about a rendered world. The world loads on first use, so an oracle is cheap to create
    and to ship to a Ray actor before anything asks it a question."""

    def __init__(self, world_dir: str | Path):
        self.world_dir = world_dir
        self._present_cache: dict[str, frozenset[str]] = {}

    @cached_property
    def world(self) -> World:
        return World.load(self.world_dir)

    @property
    def graph(self) -> ConceptGraph:
        return self.world.graph

    @cached_property
    def _universe(self) -> list[str]:
        return self.graph.noun_phrases()

    def media_size(self, media_id: str) -> tuple[int, int]:
        r = self.world.record(media_id)
        return int(r["height"]), int(r["width"])

    def _matches(self, inst: dict, parsed: ParsedNP) -> bool:
        attrs = {"colour": inst["colour"], "pattern": inst["pattern"]}
        return self.graph.is_a(inst["leaf"], parsed.node_id) and all(
            attrs.get(kind) == value for kind, value in parsed.modifiers
        )

    def instances(self, media_id: str, noun_phrase: str) -> list[str]:
        """RLE counts of every visible instance matching the NP, in drawing order ([] for a negative)."""
        record = self.world.record(media_id)
        parsed = self.graph.resolve(noun_phrase)
        if parsed is None:
            return []
        return [inst["rle"] for inst in record["instances"] if self._matches(inst, parsed)]

    def present_nps(self, media_id: str) -> list[str]:
        """Every canonical NP with at least one instance: each instance's leaf and all its ancestors,
        bare and with every combination of its attributes. Synonyms are not repeated here."""
        return sorted(self._present(media_id))

    def _present(self, media_id: str) -> frozenset[str]:
        if media_id in self._present_cache:
            return self._present_cache[media_id]
        out: set[str] = set()
        for inst in self.world.record(media_id)["instances"]:
            attrs = [("colour", inst["colour"]), ("pattern", inst["pattern"])]
            for node in (inst["leaf"], *self.graph.ancestors(inst["leaf"])):
                for r in range(len(attrs) + 1):
                    for mods in itertools.combinations(attrs, r):
                        out.add(self.graph.np_text(node, mods))
        self._present_cache[media_id] = frozenset(out)
        return self._present_cache[media_id]

    def absent_nps(self, media_id: str) -> list[str]:
        """Every canonical NP the ontology can express that has no instance in the media."""
        present = self._present(media_id)
        return [np_ for np_ in self._universe if np_ not in present]

    def gold_annotations(
        self, split: str = "gold", nps_per_image: int = 8, negative_share: float = 0.6, seed: int = 0
    ) -> pa.Table:
        """SA-Co-like gold pairs (ANNOTATIONS schema) for every image of `split`.

        Per image: positives drawn from the present NPs, negatives from absent ones, half of them hard
        (siblings / cousins / uncles of a chosen positive, verified absent here since the oracle may
        look). Masks are exhaustive by construction. Images without instances get negatives only.
        """
        if nps_per_image < 1:
            raise ValueError(f"gold_annotations: nps_per_image must be >= 1, got {nps_per_image}")
        if not 0.0 <= negative_share <= 1.0:
            raise ValueError(f"gold_annotations: negative_share must be in [0, 1], got {negative_share}")
        media = self.world.media_ids(split)
        if not media:
            raise ValueError(f"gold_annotations: the world at {self.world.root} has no {split!r} images")
        rows = []
        for media_id in media:
            rng = np.random.default_rng(ids.stable_seed(seed, "gold", media_id))
            present = self.present_nps(media_id)
            n_neg = round(nps_per_image * negative_share)
            n_pos = min(len(present), nps_per_image - n_neg)
            positives = [present[i] for i in sorted(rng.choice(len(present), n_pos, replace=False))]
            absent = set(self.absent_nps(media_id))
            hard = [
                c.noun_phrase for c in np_candidates(self.graph, positives, rng) if c.noun_phrase in absent
            ]
            negatives = hard[: n_neg // 2]
            pool = sorted(absent - set(negatives))
            negatives += [pool[i] for i in rng.choice(len(pool), n_neg - len(negatives), replace=False)]
            for np_ in sorted(positives) + sorted(negatives):
                rows.append(self._annotation(media_id, np_))
        return pa.Table.from_pylist(rows, schema=ANNOTATIONS)

    def _annotation(self, media_id: str, noun_phrase: str) -> dict:
        h, w = self.media_size(media_id)
        pair = ids.pair_id(media_id, noun_phrase)
        masks = [
            {
                "instance_id": ids.instance_id(pair, i),
                "rle": counts,
                "box_xyxy": box_xyxy(counts, h, w),
                "score": 1.0,
            }
            for i, counts in enumerate(self.instances(media_id, noun_phrase))
        ]
        return {
            "pair_id": pair,
            "media_id": media_id,
            "uri": str(self.world.image_path(media_id)),
            "width": w,
            "height": h,
            "noun_phrase": noun_phrase,
            "masks": masks,
            "is_exhaustive": True,
            "is_negative": not masks,
            "provenance": "oracle",
            "round": 0,
        }
