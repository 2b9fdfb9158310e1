"""Checkpoints of a run whose directory is remote (s3://, gs://, ... through fsspec).

`from_pretrained` and the trainers read and write local directories. A remote run trains into a local
mirror of the checkpoint's run URL and uploads it when finished (`RunStore.publish_dir`); whoever loads that
URL later (a stage's actor on any node, a resumed driver on another machine) gets the mirror, downloaded
once and moved into place whole. Local paths and hub ids pass through unchanged.

Mirrors live under $CONCEPTENGINE_CACHE_DIR, default ~/.cache/conceptengine.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
from pathlib import Path

import fsspec

CACHE_ENV = "CONCEPTENGINE_CACHE_DIR"
COMPLETE = ".conceptengine-complete"  # written last: a mirror without it is a download or a training run


def is_remote(path: str) -> bool:
    if "://" not in path:
        return False
    return fsspec.core.split_protocol(path)[0] not in ("file", "local")


def local_mirror(url: str) -> Path:
    """The local directory standing for `url`; its name ends with the URL's last part, for people reading it."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "conceptengine")
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return root / "mirrors" / f"{digest}-{posixpath.basename(url.rstrip('/'))}"


def mark_complete(local_dir: str | Path) -> None:
    (Path(local_dir) / COMPLETE).touch()


def local_checkpoint(path: str) -> str:
    """What `from_pretrained` should load for `path`: a remote directory's mirror, else `path` itself."""
    if not is_remote(path):
        return path
    target = local_mirror(path)
    if (target / COMPLETE).exists():
        return str(target)
    fs, root = fsspec.core.url_to_fs(path)
    if not fs.isdir(root):
        raise FileNotFoundError(f"checkpoint {path} does not exist (no such directory)")
    part = target.with_name(f"{target.name}.part-{os.getpid()}")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    for remote in fs.find(root):
        local = part / posixpath.relpath(remote, root)
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(local))
    mark_complete(part)
    shutil.rmtree(target, ignore_errors=True)  # an unfinished download or an interrupted training run
    try:
        part.rename(target)
    except OSError:  # another process on this node finished the same download first
        shutil.rmtree(part, ignore_errors=True)
        if not (target / COMPLETE).exists():
            raise
    return str(target)
