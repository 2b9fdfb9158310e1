"""Round 0: list and ingest the media pool (quarantining what does not decode) and fix the gold set.

Each gold pair carries its media's domain, read from the ingested media table, so gold metrics can report
a domain of their own (gold.report_domain) without asking where the media came from.
"""

from __future__ import annotations

import posixpath

import pyarrow as pa
import pyarrow.compute as pc

from conceptengine.engine.block_files import write_block
from conceptengine.engine.ingest import IngestStage
from conceptengine.engine.round_steps import Step
from conceptengine.engine.runner import Link
from conceptengine.engine.steps import StepResult, run_block_step, run_step
from conceptengine.engine.store import StepRef, fingerprint_of_strings
from conceptengine.engine.tables import ANNOTATIONS, FAILED, GOLD, MEDIA
from conceptengine.round.context import RunContext, RunError

LISTING_ROWS = 50_000  # URIs per listing file: what one read task of the ingest hands its actor pool


def list_media(ctx: RunContext) -> pa.Table:
    """The pool as (uri, split, domain), sorted so that a listing is the same on every machine."""
    listing = ctx.sources.list_media()
    if listing.num_rows == 0:
        raise RunError(f"the media pool of media.source {ctx.cfg.media.source!r} is empty")
    return listing.sort_by([("uri", "ascending")])


def ingest(ctx: RunContext) -> StepResult:
    """A block step: the driver writes the pool's listing in files of LISTING_ROWS URIs; the workers read,
    hash and decode the media and write the media table and its quarantine."""
    listing = list_media(ctx)
    listing_fp = fingerprint_of_strings(listing.column("uri"))

    def stream(step_url: str):
        parts = [
            write_block(step_url, "listing", listing.slice(k, LISTING_ROWS))
            for k in range(0, listing.num_rows, LISTING_ROWS)
        ]
        sources = [posixpath.join(step_url, part["file"]) for part in parts]
        chain = [Link(IngestStage, ctx.cfg.ontology.stage)]
        outputs = {"media": None, "quarantine": FAILED}
        files = ctx.runner.stream_chain(chain, sources, step_url, outputs, MEDIA)
        return files | {"listing": parts}, {"quarantined": sum(f["rows"] for f in files["quarantine"])}

    sort_by = {"listing": "uri", "media": "uri", "quarantine": "uri"}
    return run_block_step(ctx, StepRef(0, Step.INGEST), [listing_fp], stream, sort_by=sort_by)


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
        pairs = ctx.sources.gold_annotations()
        # Only the gold images' media rows: the pool's table is read a file at a time, never whole.
        gold_media = pc.unique(pairs["media_id"])
        table = with_media_domain(
            pairs, media.read("media", lambda t: pc.is_in(t["media_id"], value_set=gold_media))
        )
        return {"gold": table}, {"pairs": table.num_rows}

    return run_step(ctx, StepRef(0, Step.GOLD), [media.fingerprint], ["gold"], compute)
