"""A step's output written by the workers, one Parquet file per block, listed by the step's manifest.

At scale a step's rows never reach the driver: Ray Data reads the upstream step's files, the stages map them
on actor pools, and each write task uploads its blocks as one file and returns only (file, rows). The driver
gathers those small records into the step's manifest, written last.

Exactly once: readers read the files the manifest lists and nothing else. A step redone after a crash writes
its blocks again; a file of the crashed attempt that no manifest lists is invisible and is deleted once the
new manifest is in place (`RunStore.write_block_step`). Files are named by their content, so a write task
Ray retries after losing a worker rewrites the same name with the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conceptengine.engine.store import PART_PREFIX, RunStore

# Ray Data bundles blocks up to this many rows per write task: fewer, larger files than one per batch.
BLOCK_FILE_ROWS = 20_000


def part_name(name: str, data: bytes, suffix: str = ".parquet") -> str:
    """`<table name>/part-<content hash><suffix>`, relative to the step's folder."""
    return posixpath.join(name, f"{PART_PREFIX}{hashlib.sha256(data).hexdigest()[:20]}{suffix}")


# Table name -> what it keeps of a chain's output block: the rows a filter passes, every row (None), or the
# table a function makes of the block (a module-level function: Ray ships it to the write tasks).
Outputs = dict[str, pc.Expression | Callable[[pa.Table], pa.Table] | None]
Schemas = pa.Schema | dict[str, pa.Schema]  # one for every output table, or one per table


def write_block(step_url: str, name: str, table: pa.Table, keep_empty: bool = False) -> dict[str, Any] | None:
    """Upload one block of table `name` into the step folder at `step_url` (any fsspec URL), whole: under a
    temporary name, then moved. Returns the manifest's record of it (file, rows, and the total length of
    each list column, e.g. masks, so that counts need no second read); None for an empty block unless
    `keep_empty`."""
    if table.num_rows == 0 and not keep_empty:
        return None
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    data = buffer.getvalue()
    rel = part_name(name, data)
    with RunStore(step_url).open_atomic(rel) as f:
        f.write(data)
    lists = {
        field.name: int(pc.sum(pc.list_value_length(table[field.name])).as_py() or 0)
        for field in table.schema
        if pa.types.is_list(field.type)
    }
    return {"table": name, "file": rel, "rows": table.num_rows, "lists": lists}


BlockStats = Callable[[pa.Table], dict[str, Any]]  # counts of one output block, added up over the blocks


def write_outputs(
    step_url: str, outputs: Outputs, table: pa.Table, stats: BlockStats | None = None
) -> list[dict[str, Any]]:
    """One block of a chain's output, written as each output table keeps it. With `stats`, the first
    table's record also carries `stats(block)` (see `total_stats`)."""
    records = []
    for name, keep in outputs.items():
        record = write_block(step_url, name, _kept(table, keep))
        if record and stats is not None and not records:
            record["stats"] = stats(table)
        records += [record] if record else []
    return records


def _kept(table: pa.Table, keep: pc.Expression | Callable[[pa.Table], pa.Table] | None) -> pa.Table:
    if keep is None:
        return table
    return table.filter(keep) if isinstance(keep, pc.Expression) else keep(table)


def total_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The blocks' `stats` added up, nested dicts of numbers key by key."""

    def add_into(total: dict, stats: dict) -> None:
        for key, value in stats.items():
            if isinstance(value, dict):
                add_into(total.setdefault(key, {}), value)
            else:
                total[key] = total.get(key, 0) + value

    total: dict[str, Any] = {}
    for record in records:
        add_into(total, record.get("stats", {}))
    return total


def by_table(records: list[dict[str, Any]], outputs: Outputs, step_url: str, schemas: Schemas) -> dict:
    """Records grouped per output table; a table no block had rows for lists one empty file, so its readers
    still get its columns."""
    grouped: dict[str, list[dict[str, Any]]] = {name: [] for name in outputs}
    for record in records:
        grouped[record["table"]].append(record)
    for name, found in grouped.items():
        if not found:
            schema = schemas[name] if isinstance(schemas, dict) else schemas
            found.append(write_block(step_url, name, schema.empty_table(), keep_empty=True))
    return grouped
