"""Arrow schemas of the engine's tables. Masks are always COCO compressed RLE strings, never dense.

An RLE is stored as its `counts` string; its size is the media's (height, width), which every row
that holds masks also carries, so a mask decodes with pycocotools from the row alone.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

MASK = pa.struct(
    [
        ("instance_id", pa.string()),
        ("rle", pa.string()),  # COCO compressed RLE counts (utf-8)
        ("box_xyxy", pa.list_(pa.float32(), 4)),  # pixels
        ("score", pa.float32()),
    ]
)

MEDIA = pa.schema(
    [
        ("media_id", pa.string()),
        ("uri", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("domain", pa.string()),
        ("split", pa.string()),  # train | gold
        ("error", pa.string()),  # null when the media decoded
    ]
)

PAIRS = pa.schema(
    [
        ("pair_id", pa.string()),
        ("media_id", pa.string()),
        ("uri", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("noun_phrase", pa.string()),
        ("node_id", pa.string()),
        ("origin", pa.string()),  # caption | ontology | negative | hard_negative
        ("round", pa.int32()),
    ]
)

# Pair-level: one row per image-NP pair with its instances nested, because EV and routing need all
# of a pair's masks together. `presence` is the detector's image-level presence probability.
PROPOSALS = pa.schema(
    list(PAIRS)
    + [
        ("presence", pa.float32()),
        ("masks", pa.list_(MASK)),
        ("model_version", pa.string()),
        ("error", pa.string()),
    ]
)

# AI_VERIFY's output: PROPOSALS plus per mask MV's choice probabilities, per pair EV's, and the verifiers'
# versions.
MV_PROBS = pa.list_(pa.list_(pa.float32()))
EV_PROBS = pa.list_(pa.float32())
OUTPUT_FIELDS = [("mv_probs", MV_PROBS), ("ev_probs", EV_PROBS), ("verifier_version", pa.string())]
VERIFIED = pa.schema(list(PROPOSALS) + [pa.field(n, t) for n, t in OUTPUT_FIELDS])

VERDICTS = pa.schema(
    [
        ("subject_id", pa.string()),  # instance_id for mv, pair_id for ev / correction
        ("pair_id", pa.string()),
        ("task", pa.string()),  # mv | ev | correction
        ("annotator", pa.string()),  # ai:VERSION | human:ID | sim:ID
        ("choice", pa.string()),
        ("probs", pa.list_(pa.float32())),
        ("seconds", pa.float32()),
        ("round", pa.int32()),
    ]
)

ANNOTATIONS = pa.schema(
    [
        ("pair_id", pa.string()),
        ("media_id", pa.string()),
        ("uri", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("noun_phrase", pa.string()),
        ("masks", pa.list_(MASK)),
        ("is_exhaustive", pa.bool_()),
        ("is_negative", pa.bool_()),
        ("provenance", pa.string()),  # auto | human | corrected
        ("round", pa.int32()),
    ]
)

# The gold split's pairs: annotations plus their media's domain (MEDIA.domain), so gold metrics can score
# a domain on its own (gold.report_domain).
GOLD = pa.schema(list(ANNOTATIONS) + [pa.field("domain", pa.string())])


# The same selections as expressions, for workers that filter blocks (engine/block_files.py).
FAILED = pc.field("error").is_valid()
HEALTHY = pc.field("error").is_null()


def failed_rows(table: pa.Table) -> pa.Table:
    """Rows a stage gave an `error` (they are quarantined, never passed on)."""
    return table.filter(FAILED)


def healthy_rows(table: pa.Table) -> pa.Table:
    return table.filter(HEALTHY)
