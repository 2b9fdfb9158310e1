"""The run store: one directory (any fsspec URL) holding every step's output and its manifest.

A step is done when its `_SUCCESS.json` exists and matches the run's config hash and the step's input
fingerprint. Every file is written under a temporary name and moved into place whole, and a step's manifest
last, so a crash (even kill -9), a full disk or a read-only mount at any moment leaves either a finished
step or one that is simply redone, and never half a file under a real name.
"""

from __future__ import annotations

import errno
import hashlib
import json
import posixpath
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from conceptengine.engine.checkpoints import COMPLETE, is_remote, local_mirror, mark_complete

MANIFEST = "_SUCCESS.json"
PART_PREFIX = "part-"  # block files of a step its workers wrote (engine/block_files.py)


@dataclass(frozen=True)
class StepRef:
    round: int
    step: str

    @property
    def rel(self) -> str:
        return f"round-{self.round:04d}/{self.step}"


class NotARunError(ValueError):
    """A reader (status, export, eval, review) was pointed at something that is not a run directory."""


class RunStoreWriteError(RuntimeError):
    """The run directory cannot be written (full disk, read-only mount, no permission): the message says which
    file and what to do. What was being written was not kept; finished steps are untouched."""


# A storage problem the user fixes (space, mount, permissions), as opposed to a bug.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class RunStore:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.fs.makedirs(self.root, exist_ok=True)

    @classmethod
    def existing(cls, url: str) -> RunStore:
        """An existing run, for commands that only read one: a wrong path is reported, never created."""
        fs, root = fsspec.core.url_to_fs(url.rstrip("/"))
        if not fs.exists(root):
            raise NotARunError(
                f"{url}: no such run directory (check the path; runs are made by `conceptengine run`)"
            )
        if not fs.isdir(root):
            raise NotARunError(f"{url} is a file; give the run's directory (the one holding run.json)")
        if not fs.exists(posixpath.join(root, "run.json")):
            raise NotARunError(f"{url} is not a conceptengine run (no run.json)")
        return cls(url)

    # -- paths --------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    @property
    def is_local(self) -> bool:
        return not is_remote(self.url)

    def url_for(self, *parts: str) -> str:
        """A run file as other readers open it with fsspec (a remote store's protocol kept)."""
        path = self.path(*parts)
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def workdir(self, *parts: str) -> str:
        """A local directory for files that libraries write themselves (a checkpoint being trained): in the
        run directory when it is local, else the local mirror of its URL, published by `publish_dir`."""
        if self.is_local:
            return self.path(*parts)
        return str(local_mirror(self.url_for(*parts)))

    def publish_dir(self, local_dir: str, *parts: str, skip: tuple[str, ...] = ("checkpoints", "ray")) -> str:
        """Make a finished `workdir` part of the run; returns what loaders are given (path or URL). The
        trainer's resume state (`skip`) stays local. A crash mid-upload leaves the step to be redone (its
        manifest comes after), and the redo uploads again."""
        if self.is_local:
            return local_dir
        base = Path(local_dir)
        for file in sorted(p for p in base.rglob("*") if p.is_file()):
            rel = file.relative_to(base)
            if rel.parts[0] in skip or rel.name == COMPLETE:
                continue
            with file.open("rb") as src, self.open_atomic(posixpath.join(*parts, *rel.parts)) as f:
                shutil.copyfileobj(src, f)  # streamed: a full-size SAM 3 is gigabytes
        mark_complete(base)
        return self.url_for(*parts)

    def local_path(self, *parts: str) -> str:
        """A path usable by libraries that need a local file (SQLite); only for local stores."""
        if not self.is_local:
            raise ValueError(f"run store {self.url} is not local; set review.url to a database URL")
        return self.path(*parts)

    # -- run snapshot -------------------------------------------------------------------------
    @contextmanager
    def open_atomic(self, rel: str, mode: str = "wb") -> Iterator[IO]:
        """Write `rel` under a temporary name and move it into place once whole; on any failure the
        temporary file is removed, and a storage failure becomes one RunStoreWriteError."""
        target = self.path(rel)
        tmp = target + ".tmp"
        with self.writing(rel):
            try:
                self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
                with self.fs.open(tmp, mode) as f:
                    yield f
                self.fs.mv(tmp, target)
            except BaseException:
                self._discard(tmp)
                raise

    @contextmanager
    def writing(self, rel: str) -> Iterator[None]:
        """A storage failure (full disk, read-only mount, no permission) inside the block becomes one
        RunStoreWriteError naming `rel` and the fix."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in STORAGE_ERRNOS:
                raise
            raise RunStoreWriteError(
                f"cannot write {self.url}/{rel}: {exc.strerror or exc}. Nothing half-written was kept; free "
                "space or make the run directory writable, then continue with --resume"
            ) from None

    def _discard(self, path: str) -> None:
        try:
            if self.fs.exists(path):
                self.fs.rm(path)
        except OSError:
            pass  # the storage is failing already; the next write of this name replaces it

    def write_json(self, rel: str, obj: Any) -> None:
        with self.open_atomic(rel, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)

    def read_json(self, rel: str) -> Any | None:
        target = self.path(rel)
        if not self.fs.exists(target):
            return None
        with self.fs.open(target, "r") as f:
            return json.load(f)

    # -- steps --------------------------------------------------------------------------------
    def manifest(self, ref: StepRef) -> dict | None:
        return self.read_json(posixpath.join(ref.rel, MANIFEST))

    def is_done(self, ref: StepRef, config_hash: str, fingerprint: str) -> bool:
        m = self.manifest(ref)
        return bool(m) and m.get("config_hash") == config_hash and m.get("input_fingerprint") == fingerprint

    def write_step(
        self,
        ref: StepRef,
        tables: dict[str, pa.Table],
        config_hash: str,
        fingerprint: str,
        extra: dict | None = None,
    ) -> dict:
        """Write each named table as `<name>.parquet`, then the manifest. Returns the manifest."""
        self.invalidate(ref)
        rows = {}
        for name, table in tables.items():
            self.write_parquet(posixpath.join(ref.rel, f"{name}.parquet"), table)
            rows[name] = table.num_rows
        return self._write_manifest(ref, rows, config_hash, fingerprint, extra)

    def invalidate(self, ref: StepRef) -> None:
        """Redoing a step removes its manifest first: until the new one is written the step is not done."""
        manifest = self.path(ref.rel, MANIFEST)
        if self.fs.exists(manifest):
            with self.writing(posixpath.join(ref.rel, MANIFEST)):
                self.fs.rm(manifest)

    def write_block_step(
        self,
        ref: StepRef,
        files: dict[str, list[dict]],
        config_hash: str,
        fingerprint: str,
        extra: dict | None = None,
        sort_by: dict[str, str] | None = None,
    ) -> dict:
        """Finish a step whose tables the workers wrote as block files (engine/block_files.py; `files`: per
        table, the records its write tasks returned): the manifest lists them, then every block file of
        the step it does not list (an earlier, crashed attempt's) is deleted. Returns the manifest.
        `sort_by`: per table, the column a whole-table read is sorted by (which rows share a block file is
        the cluster's business, so only a sorted read is reproducible)."""
        rows = {name: sum(f["rows"] for f in records) for name, records in files.items()}
        listed = {name: sorted(f["file"] for f in records) for name, records in files.items()}
        lists = {
            name: {col: sum(f["lists"].get(col, 0) for f in records) for col in records[0]["lists"]}
            for name, records in files.items()
            if records and records[0]["lists"]
        }
        extra = (extra or {}) | ({"list_lengths": lists} if lists else {})
        manifest = self._write_manifest(ref, rows, config_hash, fingerprint, extra, listed, sort_by)
        keep = {self.path(ref.rel, f) for names in listed.values() for f in names}
        for name in files:
            for stale in self.fs.glob(self.path(ref.rel, name, f"{PART_PREFIX}*")):
                if stale not in keep:
                    self._discard(stale)
        return manifest

    def _write_manifest(
        self,
        ref: StepRef,
        rows: dict[str, int],
        config_hash: str,
        fingerprint: str,
        extra: dict | None,
        files: dict[str, list[str]] | None = None,
        sort_by: dict[str, str] | None = None,
    ) -> dict:
        manifest = {
            "round": ref.round,
            "step": ref.step,
            "rows": rows,
            "config_hash": config_hash,
            "input_fingerprint": fingerprint,
            # Block files are named by content, so listing them makes the fingerprint follow the data.
            "output_fingerprint": fingerprint_of(ref.rel, fingerprint, rows, extra or {}, files or {}),
            **({"files": files} if files else {}),
            **({"sort_by": sort_by} if sort_by else {}),
            **({"extra": extra} if extra else {}),
        }
        self.write_json(posixpath.join(ref.rel, MANIFEST), manifest)
        return manifest

    def step_urls(self, ref: StepRef, name: str) -> list[str]:
        """The files that hold table `name` of a finished step, as URLs any worker can open: the block
        files its manifest lists, or its one `<name>.parquet`."""
        listed = (self.manifest(ref) or {}).get("files", {}).get(name)
        if listed is None:
            return [self.url_for(ref.rel, f"{name}.parquet")]
        return [self.url_for(ref.rel, f) for f in listed]

    def read_step(
        self,
        ref: StepRef,
        name: str,
        columns: list[str] | None = None,
        where: Callable[[pa.Table], pa.Array] | None = None,
    ) -> pa.Table:
        """Table `name` of a finished step (only `columns`, when given; only the rows `where` marks, file by
        file, when given): for the driver's own steps, for readers of small runs and for the few rows of a
        large step the driver needs (e.g. the routed pairs calibration has verdicts for)."""
        tables = [t if where is None else t.filter(where(t)) for t in self.iter_step(ref, name, columns)]
        table = pa.concat_tables(tables, promote_options="default")
        key = (self.manifest(ref) or {}).get("sort_by", {}).get(name)
        if key is None or key not in table.column_names or not table.num_rows:
            return table
        return table.sort_by([(key, "ascending")])

    def iter_step(self, ref: StepRef, name: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Table `name` of a finished step, one file at a time (only `columns`, when given)."""
        for url in self.step_urls(ref, name):
            with fsspec.open(url, "rb") as f:
                yield pq.read_table(f, columns=columns)

    def read_every_round(
        self, step: str, name: str, schema: pa.Schema, where: Callable[[pa.Table], pa.Array] | None = None
    ) -> pa.Table:
        """Table `name` of `step` in every round that finished it (only the rows `where` marks, when given), in
        round order (e.g. all the committed annotations); an empty `schema` table when none did."""
        tables = [self.read_step(StepRef(r, step), name, where=where) for r in self.rounds_with(step)]
        return pa.concat_tables(tables, promote_options="default") if tables else schema.empty_table()

    def write_parquet(self, rel: str, table: pa.Table) -> None:
        with self.open_atomic(rel) as f:
            pq.write_table(table, f)

    def rounds_with(self, step: str) -> list[int]:
        """The rounds in which `step` finished (its manifest is written)."""
        return [r for r in self.rounds_done() if self.manifest(StepRef(r, step)) is not None]

    def rounds_done(self) -> list[int]:
        found = []
        for p in self.fs.glob(self.path("round-*")):
            try:
                found.append(int(posixpath.basename(p).split("-")[1]))
            except (IndexError, ValueError):
                continue
        return sorted(found)


def fingerprint_of(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def fingerprint_of_strings(values: pa.ChunkedArray | pa.Array, slice_rows: int = 50_000) -> str:
    """fingerprint_of(values.to_pylist()), a slice at a time: a pool's millions of URIs never become Python
    strings all at once (json.dumps of a list of strings is its items' dumps joined by ", ", in brackets)."""
    digest = hashlib.sha256(b"[[")
    for start in range(0, len(values), slice_rows):
        items = ", ".join(json.dumps(v) for v in values.slice(start, slice_rows).to_pylist())
        digest.update((", " if start else "").encode() + items.encode())
    digest.update(b"]]")
    return digest.hexdigest()[:16]
