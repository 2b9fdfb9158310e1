"""Round 0: list and ingest the media pool (quarantining what does not decode) and fix the gold set.

Each gold pair carries its media's domain, read from the ingested media table, so gold metrics can report
a domain of their own (gold.report_domain) without asking where the media came from.
"""

from __future__ import annotations

import posixpath

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from conceptengine.engine.context import RunContext, RunError, resolve
from conceptengine.engine.ingest import IngestStage
from conceptengine.engine.runner import run_stage
from conceptengine.engine.steps import StepResult, run_step
from conceptengine.engine.store import StepRef, fingerprint_of
from conceptengine.engine.tables import ANNOTATIONS, GOLD, MEDIA

LISTING = pa.schema([("uri", pa.string()), ("split", pa.string()), ("domain", pa.string())])


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
LIST_SUFFIXES = (".txt", ".lst")


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


def list_media(ctx: RunContext) -> pa.Table:
    """The pool as (uri, split, domain), sorted so that a listing is the same on every machine."""
    if ctx.cfg.media.source == "sim":
        from conceptengine.sim.world import DOMAIN, World

        world = World.load(ctx.world_dir)
        gt = world.ground_truth
        names = gt["file_name"].to_pylist()
        split_of = dict(zip(names, gt["split"].to_pylist(), strict=True))
        domain_of = dict(zip(names, gt["domain"].to_pylist(), strict=True))
        fs, root = fsspec.core.url_to_fs(posixpath.join(ctx.world_dir, "images"))
        files = sorted(fs.glob(posixpath.join(root, "*")))
        rows = [
            {
                "uri": f,
                "split": split_of.get(posixpath.basename(f), "train"),
                "domain": domain_of.get(posixpath.basename(f), DOMAIN),
            }
            for f in files
        ]
    else:
        files = pool_uris(resolve(ctx.workspace, ctx.cfg.media.uri or ""))
        if not files:
            raise RunError(f"media.uri {ctx.cfg.media.uri!r} matches no files")
        rows = [{"uri": f, "split": "train", "domain": "files"} for f in files]
    if not rows:
        raise RunError(f"the media pool at {ctx.world_dir} is empty")
    return pa.Table.from_pylist(rows, schema=LISTING)


def ingest(ctx: RunContext) -> StepResult:
    listing = list_media(ctx)
    listing_fp = fingerprint_of(listing.column("uri").to_pylist())

    def compute():
        media = run_stage(ctx.runner, IngestStage, ctx.cfg.ontology.stage, {}, listing, "uri", MEDIA)
        bad = media.filter(pc.invert(pc.is_null(media["error"])))
        return {"media": media, "quarantine": bad}, {"quarantined": bad.num_rows}

    return run_step(ctx, StepRef(0, "ingest"), [listing_fp], ["media", "quarantine"], compute)


def with_media_domain(pairs: pa.Table, media: pa.Table) -> pa.Table:
    """ANNOTATIONS rows plus their media's `domain` from the MEDIA table (GOLD schema); null for a pair
    whose media was not ingested."""
    domain_of = dict(zip(media["media_id"].to_pylist(), media["domain"].to_pylist(), strict=True))
    domains = [domain_of.get(m) for m in pairs["media_id"].to_pylist()]
    table = pairs.select(ANNOTATIONS.names).cast(ANNOTATIONS)
    return table.append_column(GOLD.field("domain"), pa.array(domains, pa.string()))


def gold(ctx: RunContext, media: StepResult) -> StepResult:
    """The gold split's image-NP pairs with exhaustive masks, in the GOLD schema (ANNOTATIONS + the media's
    domain)."""

    def compute():
        if ctx.cfg.media.source == "sim":
            from conceptengine.sim.oracle import Oracle

            table = Oracle(ctx.world_dir).gold_annotations(
                split="gold",
                nps_per_image=ctx.cfg.gold.nps_per_image,
                negative_share=ctx.cfg.gold.negative_share,
                seed=ctx.cfg.seed,
            )
        else:
            from conceptengine.model.saco_io import read_saco_gold_annotations

            table = read_saco_gold_annotations(resolve(ctx.workspace, ctx.cfg.media.gold_json))
        table = with_media_domain(table, media["media"])
        return {"gold": table}, {"pairs": table.num_rows}

    return run_step(ctx, StepRef(0, "gold"), [media.fingerprint], ["gold"], compute)
