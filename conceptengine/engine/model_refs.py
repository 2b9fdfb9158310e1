"""Models by local folder or Hugging Face Hub id, the way transformers users give them.

`sam3.model: models/sam3` (a folder, relative to the config's workspace), `/abs/dir`, `s3://...`, or a hub id
`facebook/sam3` / `facebook/sam3@<revision>`. A hub id becomes a local snapshot through huggingface_hub, with
its cache (HF_HOME), HF_HUB_OFFLINE and token (HF_TOKEN or `hf auth login`); the run then hands that folder
to every actor, so no worker talks to the hub. On a cluster, HF_HOME must be a path every node sees.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

# org/name with an optional @revision (branch, tag or commit); the hub's own name rules.
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")


class ModelUnavailable(ValueError):
    """A configured model is neither a folder nor a hub model this machine can get; says what to do."""


def hub_id(ref: str) -> tuple[str, str | None] | None:
    """(repo id, revision or None) when `ref` is written as a hub id, else None."""
    m = HUB_ID.match(ref)
    return (m["repo"], m["revision"]) if m else None


def model_dir(workspace: Path, ref: str, key: str) -> str:
    """A folder (or URL) to load `ref` from. A path that exists wins over a hub id of the same spelling."""
    if "://" in ref or os.path.isabs(ref):
        return ref
    local = str((workspace / ref).resolve())
    if Path(local).exists() or hub_id(ref) is None:
        return local  # a missing folder is reported by the run's model check, naming `key`
    return hub_snapshot(ref, key, local)


@lru_cache(maxsize=32)
def hub_snapshot(ref: str, key: str, local: str) -> str:
    """The hub model's snapshot folder, downloaded into the Hugging Face cache once (configs and weights)."""

    repo, revision = hub_id(ref) or (ref, None)
    try:
        return snapshot_download(repo, revision=revision)
    except GatedRepoError:
        raise ModelUnavailable(
            f"{key}: {repo} is gated on the Hugging Face Hub: accept its terms at https://huggingface.co/{repo} "
            "with your account, then log in on this machine (`hf auth login`, or set HF_TOKEN)"
        ) from None
    except RepositoryNotFoundError:
        raise ModelUnavailable(
            f"{key}: {ref} is neither a folder at {local} nor a model on the Hugging Face Hub "
            "(a private one needs `hf auth login` or HF_TOKEN)"
        ) from None
    except RevisionNotFoundError:
        raise ModelUnavailable(
            f"{key}: {repo} has no revision {revision!r} on the Hugging Face Hub"
        ) from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else "the hub cannot be reached"
        download = f"hf download {repo}" + (f" --revision {revision}" if revision else "")
        raise ModelUnavailable(
            f"{key}: {ref} is neither a folder at {local} nor in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
            f"and {why}: fix the path, or download the model once where there is network (`{download}`, same "
            "HF_HOME)"
        ) from None
