"""The concept tree of the rendered shapes domain, and the colours its attribute values render as.

Defined in code (not a data file) so that an installed wheel always carries it; `build_world` writes
it out as `ontology.yaml`, which is what the rest of the engine reads, like any user's ontology.
Leaves are chosen to stay distinguishable at ~20 px: every leaf differs in outline, not only in size.
"""

from __future__ import annotations

from typing import Any

from conceptengine.ontology.graph import ConceptGraph

# (id, name, parent, synonyms): parents come before children; leaves are the renderable concepts.
_CONCEPTS: list[tuple[str, str, str | None, tuple[str, ...]]] = [
    ("shape", "shape", None, ("object", "figure")),
    ("polygon", "polygon", "shape", ("polygonal shape",)),
    ("triangle", "triangle", "polygon", ()),
    ("equilateral_triangle", "equilateral triangle", "triangle", ("regular triangle",)),
    ("right_triangle", "right triangle", "triangle", ("right-angled triangle",)),
    ("quadrilateral", "quadrilateral", "polygon", ("four-sided shape",)),
    ("square", "square", "quadrilateral", ()),
    ("rectangle", "rectangle", "quadrilateral", ("oblong",)),
    ("diamond", "diamond", "quadrilateral", ("rhombus", "lozenge")),
    ("trapezoid", "trapezoid", "quadrilateral", ("trapezium",)),
    ("parallelogram", "parallelogram", "quadrilateral", ()),
    ("kite", "kite", "quadrilateral", ()),
    ("pentagon", "pentagon", "polygon", ()),
    ("hexagon", "hexagon", "polygon", ()),
    ("octagon", "octagon", "polygon", ()),
    ("round_shape", "round shape", "shape", ("curved shape",)),
    ("circle", "circle", "round_shape", ("disc", "disk")),
    ("ellipse", "ellipse", "round_shape", ("oval",)),
    ("ring", "ring", "round_shape", ("annulus", "donut")),
    ("semicircle", "semicircle", "round_shape", ("half circle", "half-circle")),
    ("crescent", "crescent", "round_shape", ("crescent moon",)),
    ("symbol", "symbol", "shape", ("sign", "icon")),
    ("star", "star", "symbol", ()),
    ("cross", "cross", "symbol", ("plus sign", "plus")),
    ("heart", "heart", "symbol", ()),
    ("arrow", "arrow", "symbol", ()),
    ("lightning_bolt", "lightning bolt", "symbol", ("bolt", "zigzag")),
    ("chevron", "chevron", "symbol", ("caret",)),
]

# RGB of each colour value; a shape's pixels are this plus a small per-object jitter.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (240, 215, 40),
    "orange": (245, 135, 25),
    "purple": (140, 50, 175),
    "white": (242, 242, 242),
    "black": (22, 22, 22),
}
_COLOUR_SYNONYMS = {"purple": ("violet",)}

PATTERNS: dict[str, tuple[str, ...]] = {
    "solid": ("plain",),
    "striped": ("stripy",),
    "dotted": ("spotted", "polka-dot"),
    "checkered": ("checked", "chequered"),
}


def shapes_ontology_dict() -> dict[str, Any]:
    """The rendered domain's ontology in the YAML layout `ConceptGraph.from_dict` reads."""
    return {
        "name": "rendered-shapes",
        "concepts": [
            {"id": i, "name": n, "parent": p, **({"synonyms": list(s)} if s else {})}
            for i, n, p, s in _CONCEPTS
        ],
        "attributes": {
            "colour": [
                {"name": c, "synonyms": list(_COLOUR_SYNONYMS[c])} if c in _COLOUR_SYNONYMS else c
                for c in PALETTE
            ],
            "pattern": [{"name": p, "synonyms": list(s)} for p, s in PATTERNS.items()],
        },
    }


def shapes_graph() -> ConceptGraph:
    return ConceptGraph.from_dict(shapes_ontology_dict(), source="conceptengine.sim.taxonomy")
