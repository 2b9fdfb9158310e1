"""What a run takes from outside its config: the media pool, the gold set, a captioner, reviewers, ground truth.

The steps reach these only through `RunSources`. A team's run gets them from its config (`media.source:
files`: images on any fsspec URL, SA-Co/Gold JSON, the captioner `ontology.*` chooses, people in the review
app, no ground truth). Each `media.source` name is an entry point of the group `conceptengine.sources`
(pyproject.toml), loaded when a run asks for it: the rendered demo world's "sim" is
`conceptengine.pipelines.demo:demo_sources`, so no step knows the demo exists and nothing registers itself on
import.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol

import fsspec
import pyarrow as pa

from conceptengine.engine.runner import Runner
from conceptengine.model.saco_io import read_saco_gold_annotations
from conceptengine.ontology.captioner import CaptionerFactory
from conceptengine.round.errors import RunError

if TYPE_CHECKING:
    from conceptengine.round.context import RunInputs

# What listing a pool gives: each media's URI, its split (train | gold) and its domain (gold.report_domain).
LISTING = pa.schema([("uri", pa.string()), ("split", pa.string()), ("domain", pa.string())])
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
LIST_SUFFIXES = (".txt", ".lst")


class Reviewers(Protocol):
    """Who answers the review queue besides the people in the review app (which needs no code here)."""

    def answer(self, runner: Runner, queue_url: str, kinds: list[str], round_index: int) -> None:
        """Answer every open task of these kinds in the round (the step then waits for what is left)."""
        ...

    def adjudicate(self, queue_url: str, round_index: int) -> None:
        """Rule on the round's disputed items, as an admin."""
        ...


class GroundTruth(Protocol):
    """Exact instances for any (media, noun phrase): only a rendered world has them."""

    def instances(self, media_id: str, noun_phrase: str) -> list[str]:
        """The RLE counts of every instance of the noun phrase in the media."""
        ...


@dataclass(frozen=True)
class RunSources:
    list_media: Callable[[], pa.Table]  # the pool, as LISTING rows
    gold_annotations: Callable[[], pa.Table]  # the gold split's pairs, as ANNOTATIONS rows
    captioner: CaptionerFactory | None = None  # used when ontology.positives_from is unset
    reviewers: Reviewers | None = None  # None: people only
    ground_truth: GroundTruth | None = None  # None: committed quality is not measured
    ontology_path: str | None = None  # used when ontology.path is unset


SOURCES_GROUP = "conceptengine.sources"


def sources_for(inputs: RunInputs) -> RunSources:
    """The run's sources, built by the factory `media.source` names in the entry point group."""
    name = inputs.cfg.media.source
    found = entry_points(group=SOURCES_GROUP, name=name)
    if not found:
        known = sorted(ep.name for ep in entry_points(group=SOURCES_GROUP))
        raise RunError(
            f"media.source {name!r}: no entry point of that name in group {SOURCES_GROUP!r} (installed: {known}); "
            "if the list is empty or stale, reinstall the package (pip install -e .)"
        )
    factory = next(iter(found)).load()
    return factory(inputs)


def pool_uris(spec: str) -> list[str]:
    """A team's pool from `media.uri`, sorted: a list file (.txt / .lst, one URI per line, relative ones
    against the file's folder), a folder (its image files, recursively), or a glob (any fsspec URL)."""
    fs, path = fsspec.core.url_to_fs(spec)
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    prefix = "" if proto in ("file", "local") else f"{proto}://"
    if path.lower().endswith(LIST_SUFFIXES) and fs.isfile(path):
        with fs.open(path, "rt") as f:
            lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        folder = posixpath.dirname(spec)
        return sorted(u if "://" in u or u.startswith("/") else posixpath.join(folder, u) for u in lines)
    if fs.isdir(path):
        found = [f for f in fs.find(path) if f.lower().endswith(IMAGE_SUFFIXES)]
    else:
        found = fs.glob(path)
    return sorted(prefix + f for f in found)


def files_sources(inputs: RunInputs) -> RunSources:
    """`media.source: files`: a team's own pool, every image in the train split of domain "files"."""
    cfg = inputs.cfg

    def list_media() -> pa.Table:
        files = pool_uris(inputs.resolve(cfg.media.uri or ""))
        if not files:
            raise RunError(f"media.uri {cfg.media.uri!r} matches no files")
        return pa.Table.from_pylist([{"uri": f, "split": "train", "domain": "files"} for f in files], LISTING)

    def gold_annotations() -> pa.Table:
        return read_saco_gold_annotations(inputs.resolve(cfg.media.gold_json or ""))

    return RunSources(list_media, gold_annotations)
