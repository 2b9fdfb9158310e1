"""The concept graph: a tree of concepts plus attribute vocabularies, and a parser from NP text to both.

Why a tree and not free text: the engine needs *relations* between concepts. Hierarchy closure (a
square is also a polygon) lets the oracle and the verifiers reason about implied positives, and
siblings / cousins / uncles of a positive concept are where hard negatives come from (SAM 3 paper).
Attributes (colour, pattern, ...) are kept apart from concepts because they combine freely with any
concept: "red striped square" is the concept `square` with two modifiers, not a node of its own.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conceptengine.engine.ids import normalize_np

_ARTICLES = frozenset({"a", "an", "the"})
_NODE_KEYS = frozenset({"id", "name", "synonyms", "parent"})
_VALUE_KEYS = frozenset({"name", "synonyms"})


class OntologyError(ValueError):
    """A broken ontology: the message names the file (or source) and the node to fix."""


@dataclass(frozen=True)
class Node:
    """One concept. `parent` is None for a root; synonyms are alternative surface forms of the name."""

    id: str
    name: str
    synonyms: tuple[str, ...] = ()
    parent: str | None = None


@dataclass(frozen=True)
class AttributeValue:
    """One value of an attribute kind, e.g. kind 'colour', name 'purple', synonyms ('violet',)."""

    kind: str
    name: str
    synonyms: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParsedNP:
    """A noun phrase mapped onto the graph: one concept node and at most one value per attribute kind.

    `modifiers` holds (kind, value) pairs in the graph's attribute-kind order, so two phrasings of the
    same NP ("striped red square", "red striped square") parse to equal objects.
    """

    node_id: str
    modifiers: tuple[tuple[str, str], ...] = ()

    def get(self, kind: str) -> str | None:
        return dict(self.modifiers).get(kind)

    @property
    def attributes(self) -> dict[str, str]:
        return dict(self.modifiers)


def _plural(phrase: str) -> str:
    """Naive English plural of a phrase's last word; good enough for the short concept names we use."""
    if phrase.endswith(("s", "x", "z", "ch", "sh")):
        return phrase + "es"
    if phrase.endswith("y") and len(phrase) > 1 and phrase[-2] not in "aeiou":
        return phrase[:-1] + "ies"
    return phrase + "s"


class ConceptGraph:
    """A validated concept tree (a forest is allowed) with attribute vocabularies and an NP parser."""

    def __init__(
        self,
        nodes: Sequence[Node],
        attributes: Mapping[str, Sequence[AttributeValue]] | None = None,
        name: str = "ontology",
        source: str = "<memory>",
    ):
        self.name = name
        self.source = source
        self._nodes: dict[str, Node] = {}
        self._children: dict[str, list[str]] = {}
        self._attributes: dict[str, tuple[AttributeValue, ...]] = {
            kind: tuple(values) for kind, values in (attributes or {}).items()
        }
        for node in nodes:
            self._check_node(node)
            self._nodes[node.id] = node
            self._children[node.id] = []
        for node in nodes:
            if node.parent is not None:
                if node.parent not in self._nodes:
                    self._fail(node.id, f"parent {node.parent!r} is not defined")
                self._children[node.parent].append(node.id)
        self._check_acyclic()
        self._ancestors = {n: self._walk_up(n) for n in self._nodes}
        self._concept_index = self._build_concept_index()
        self._attribute_index = self._build_attribute_index()
        self._max_concept_words = max((len(f.split()) for f in self._concept_index), default=1)
        self._max_attribute_words = max((len(f.split()) for f in self._attribute_index), default=1)

    # ---------------------------------------------------------------- validation
    def _fail(self, node_id: str, problem: str) -> None:
        raise OntologyError(f"ontology {self.source}: node {node_id!r}: {problem}")

    def _check_node(self, node: Node) -> None:
        if not isinstance(node.id, str) or not node.id.strip():
            raise OntologyError(f"ontology {self.source}: a node has an empty or non-string id ({node!r})")
        if node.id in self._nodes:
            self._fail(node.id, "is defined twice")
        if not isinstance(node.name, str) or not normalize_np(node.name):
            self._fail(node.id, "has no name")
        for syn in node.synonyms:
            if not isinstance(syn, str) or not normalize_np(syn):
                self._fail(node.id, f"has an empty or non-string synonym {syn!r}")

    def _check_acyclic(self) -> None:
        for start in self._nodes:
            seen = {start}
            cur = self._nodes[start].parent
            while cur is not None:
                if cur in seen:
                    self._fail(start, f"its parent chain loops back through {cur!r}")
                seen.add(cur)
                cur = self._nodes[cur].parent

    def _build_concept_index(self) -> dict[str, str]:
        index: dict[str, str] = {}
        for node in self._nodes.values():
            for form in (node.name, *node.synonyms):
                key = normalize_np(form)
                if key in index and index[key] != node.id:
                    self._fail(node.id, f"name or synonym {form!r} is already used by node {index[key]!r}")
                index[key] = node.id
        # Plurals never override an explicit form ("glasses" could be a concept of its own).
        for key, node_id in list(index.items()):
            index.setdefault(_plural(key), node_id)
        return index

    def _build_attribute_index(self) -> dict[str, tuple[str, str]]:
        index: dict[str, tuple[str, str]] = {}
        for kind, values in self._attributes.items():
            for value in values:
                if value.kind != kind:
                    raise OntologyError(
                        f"ontology {self.source}: attribute value {value.name!r} is listed under {kind!r} "
                        f"but says kind {value.kind!r}"
                    )
                for form in (value.name, *value.synonyms):
                    key = normalize_np(form)
                    if not key:
                        raise OntologyError(f"ontology {self.source}: attribute {kind!r} has an empty value")
                    if key in index and index[key] != (kind, value.name):
                        raise OntologyError(
                            f"ontology {self.source}: attribute value {form!r} of {kind!r} is already "
                            f"used by {index[key][0]!r} value {index[key][1]!r}"
                        )
                    index[key] = (kind, value.name)
        return index

    # ---------------------------------------------------------------- (de)serialisation
    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> ConceptGraph:
        """Build from the YAML layout: {name, concepts: [{id, name, synonyms, parent}], attributes: {...}}."""
        if not isinstance(data, Mapping):
            raise OntologyError(f"ontology {source}: top level must be a mapping with a 'concepts' list")
        unknown = set(data) - {"name", "concepts", "attributes"}
        if unknown:
            raise OntologyError(f"ontology {source}: unknown top-level keys {sorted(unknown)}")
        concepts = data.get("concepts")
        if not isinstance(concepts, list) or not concepts:
            raise OntologyError(f"ontology {source}: 'concepts' must be a non-empty list")
        nodes = []
        for i, raw in enumerate(concepts):
            # Name the node by its id, else its name, else its position: whatever the user can find.
            label = raw.get("id", raw.get("name", f"#{i}")) if isinstance(raw, Mapping) else f"#{i}"
            if not isinstance(raw, Mapping):
                raise OntologyError(f"ontology {source}: node {label!r}: must be a mapping, got {raw!r}")
            bad = set(raw) - _NODE_KEYS
            if bad:
                raise OntologyError(f"ontology {source}: node {label!r}: unknown keys {sorted(bad)}")
            if "id" not in raw:
                raise OntologyError(f"ontology {source}: node {label!r}: has no 'id'")
            synonyms = raw.get("synonyms") or []
            if not isinstance(synonyms, list):
                raise OntologyError(f"ontology {source}: node {label!r}: 'synonyms' must be a list")
            parent = raw.get("parent")
            nodes.append(
                Node(
                    id=raw["id"],
                    name=raw.get("name", raw["id"]),
                    synonyms=tuple(synonyms),
                    parent=None if parent is None else str(parent),
                )
            )
        attributes: dict[str, list[AttributeValue]] = {}
        raw_attrs = data.get("attributes") or {}
        if not isinstance(raw_attrs, Mapping):
            raise OntologyError(f"ontology {source}: 'attributes' must map a kind to a list of values")
        for kind, values in raw_attrs.items():
            if not isinstance(values, list):
                raise OntologyError(f"ontology {source}: attribute {kind!r}: must be a list of values")
            attributes[str(kind)] = [cls._value_from_raw(str(kind), v, source) for v in values]
        return cls(nodes, attributes, name=str(data.get("name", "ontology")), source=source)

    @staticmethod
    def _value_from_raw(kind: str, raw: Any, source: str) -> AttributeValue:
        if isinstance(raw, str):
            return AttributeValue(kind, raw)
        if not isinstance(raw, Mapping) or "name" not in raw or set(raw) - _VALUE_KEYS:
            raise OntologyError(
                f"ontology {source}: attribute {kind!r}: value {raw!r} must be a string or {{name, synonyms}}"
            )
        return AttributeValue(kind, str(raw["name"]), tuple(raw.get("synonyms") or ()))

    @classmethod
    def from_yaml(cls, path: str | Path) -> ConceptGraph:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ontology file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise OntologyError(f"ontology {path}: not valid YAML: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        concepts = []
        for node in self._nodes.values():
            entry: dict[str, Any] = {"id": node.id, "name": node.name, "parent": node.parent}
            if node.synonyms:
                entry["synonyms"] = list(node.synonyms)
            concepts.append(entry)
        attributes = {
            kind: [{"name": v.name, "synonyms": list(v.synonyms)} if v.synonyms else v.name for v in values]
            for kind, values in self._attributes.items()
        }
        return {"name": self.name, "concepts": concepts, "attributes": attributes}

    def to_yaml(self, path: str | Path) -> None:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=110)
        Path(path).write_text(text, encoding="utf-8")

    # ---------------------------------------------------------------- lookups
    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self._nodes.values())

    def node(self, node_id: str) -> Node:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise KeyError(f"ontology {self.source} has no node {node_id!r}") from None

    @property
    def attribute_kinds(self) -> tuple[str, ...]:
        return tuple(self._attributes)

    def attribute_values(self, kind: str) -> tuple[str, ...]:
        return tuple(v.name for v in self._attributes[kind])

    # ---------------------------------------------------------------- relations
    def parent(self, node_id: str) -> str | None:
        return self.node(node_id).parent

    def children(self, node_id: str) -> list[str]:
        self.node(node_id)
        return list(self._children[node_id])

    def roots(self) -> list[str]:
        return [n.id for n in self._nodes.values() if n.parent is None]

    def _walk_up(self, node_id: str) -> tuple[str, ...]:
        out = []
        cur = self._nodes[node_id].parent
        while cur is not None:
            out.append(cur)
            cur = self._nodes[cur].parent
        return tuple(out)

    def ancestors(self, node_id: str) -> list[str]:
        """Parent first, root last."""
        self.node(node_id)
        return list(self._ancestors[node_id])

    def descendants(self, node_id: str) -> list[str]:
        """All nodes below `node_id`, depth first in file order (not including itself)."""
        out: list[str] = []
        stack = list(reversed(self.children(node_id)))
        while stack:
            cur = stack.pop()
            out.append(cur)
            stack.extend(reversed(self._children[cur]))
        return out

    def is_a(self, node_id: str, ancestor_id: str) -> bool:
        """True when `node_id` is `ancestor_id` or descends from it (hierarchy closure)."""
        self.node(node_id)
        return node_id == ancestor_id or ancestor_id in self._ancestors[node_id]

    def siblings(self, node_id: str) -> list[str]:
        """Other children of the same parent; roots are siblings of no one."""
        parent = self.node(node_id).parent
        if parent is None:
            return []
        return [c for c in self._children[parent] if c != node_id]

    def uncles(self, node_id: str) -> list[str]:
        """Siblings of the parent."""
        parent = self.node(node_id).parent
        return [] if parent is None else self.siblings(parent)

    def cousins(self, node_id: str) -> list[str]:
        """Children of the parent's siblings: same grandparent, different parent."""
        return [c for uncle in self.uncles(node_id) for c in self._children[uncle]]

    def leaves(self, under: str | None = None) -> list[str]:
        """Leaf concepts, all of them or those below (or equal to) `under`."""
        pool = list(self._nodes) if under is None else [under, *self.descendants(under)]
        return [n for n in pool if not self._children[n]]

    def is_leaf(self, node_id: str) -> bool:
        return not self.children(node_id)

    # ---------------------------------------------------------------- NP text
    def subtrees(self, names: Sequence[str], key: str) -> set[str]:
        """Node ids of the named concepts and everything below them. `key` is the config key that named
        them, so an unknown name fails with one error that says where to fix it."""
        nodes: set[str] = set()
        for name in names:
            parsed = self.resolve(name)
            if parsed is None:
                raise OntologyError(f"{key}: {name!r} is not a concept of the ontology")
            nodes |= {parsed.node_id, *self.descendants(parsed.node_id)}
        return nodes

    def noun_phrases_in(self, text: str, max_words: int = 5) -> list[str]:
        """The noun phrases a free-text caption names that this ontology can parse, canonical and in order of
        appearance; the longest span wins ("a red striped square and two stars" -> red striped square, star)."""
        words = re.findall(r"[a-z][a-z-]*", text.lower())
        found: list[str] = []
        i = 0
        while i < len(words):
            for n in range(min(max_words, len(words) - i), 0, -1):
                parsed = self.resolve(" ".join(words[i : i + n]))
                if parsed is not None:
                    np_ = self.np_text(parsed.node_id, parsed.modifiers)
                    if np_ not in found:
                        found.append(np_)
                    i += n
                    break
            else:
                i += 1
        return found

    def resolve(self, noun_phrase: str) -> ParsedNP | None:
        """Parse an NP into a concept and attribute modifiers; None when the graph cannot express it.

        The concept is the longest trailing word sequence that names a node (its name, a synonym or a
        plural of either); every word before it must be an attribute value, at most one per kind.
        """
        tokens = normalize_np(noun_phrase).split()
        while tokens and tokens[0] in _ARTICLES:
            tokens = tokens[1:]
        for k in range(min(len(tokens), self._max_concept_words), 0, -1):
            node_id = self._concept_index.get(" ".join(tokens[-k:]))
            if node_id is None:
                continue
            modifiers = self._parse_modifiers(tokens[:-k])
            if modifiers is not None:
                return ParsedNP(node_id, modifiers)
        return None

    def _parse_modifiers(self, tokens: list[str]) -> tuple[tuple[str, str], ...] | None:
        found: dict[str, str] = {}
        i = 0
        while i < len(tokens):
            for width in range(min(self._max_attribute_words, len(tokens) - i), 0, -1):
                hit = self._attribute_index.get(" ".join(tokens[i : i + width]))
                if hit is not None:
                    kind, value = hit
                    if found.get(kind, value) != value:
                        return None  # "red blue square" names no object
                    found[kind] = value
                    i += width
                    break
            else:
                return None
        return tuple((kind, found[kind]) for kind in self._attributes if kind in found)

    def np_text(
        self,
        node_id: str,
        modifiers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        head: str | None = None,
    ) -> str:
        """Canonical NP text: modifier values in attribute-kind order, then the concept name (or `head`)."""
        mods = dict(modifiers.items() if isinstance(modifiers, Mapping) else modifiers)
        words = [mods[kind] for kind in self._attributes if kind in mods]
        return normalize_np(" ".join([*words, head or self.node(node_id).name]))

    def canonical(self, parsed: ParsedNP) -> str:
        return self.np_text(parsed.node_id, parsed.modifiers)

    def implied(self, parsed: ParsedNP) -> set[str]:
        """Canonical NPs that are true whenever `parsed` is (hierarchy closure): the concept or any
        ancestor, with any subset of the modifiers. 'red square' implies 'polygon' and 'red shape'."""
        out = set()
        for node_id in (parsed.node_id, *self._ancestors[parsed.node_id]):
            for r in range(len(parsed.modifiers) + 1):
                for mods in itertools.combinations(parsed.modifiers, r):
                    out.add(self.np_text(node_id, mods))
        return out

    def noun_phrases(self, node_ids: Iterable[str] | None = None) -> list[str]:
        """Every canonical NP the graph can express: each node with each combination of modifiers."""
        kinds = list(self._attributes)
        out: list[str] = []
        for node_id in node_ids if node_ids is not None else self._nodes:
            for r in range(len(kinds) + 1):
                for chosen in itertools.combinations(kinds, r):
                    for values in itertools.product(*(self.attribute_values(k) for k in chosen)):
                        out.append(self.np_text(node_id, zip(chosen, values, strict=True)))
        return out
