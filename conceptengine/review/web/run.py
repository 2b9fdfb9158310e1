"""What the review server needs from a run directory: its review settings, its queue URL, its SAM 3 checkpoint
and its media table.

The server only ever reads media the run itself ingested (`round-0000/ingest/media.parquet`), looked up
by the `media_id` of a task the engine enqueued; a client never names a path. So a request cannot make the
server read any other file, whatever it sends.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from conceptengine.engine.model_refs import ModelUnavailable, model_dir
from conceptengine.engine.round_steps import Step
from conceptengine.engine.store import NotARunError, RunStore, StepRef
from conceptengine.review.db import run_queue_url
from conceptengine.review.settings import ReviewSettings


class RunOpenError(ValueError):
    """The directory is not a run the server can open; the message says what is missing."""


class _Sam3Section(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str


class _RunConfig(BaseModel):
    """The sections of a run's config snapshot the server reads; the rest belongs to the engine."""

    model_config = ConfigDict(extra="ignore")
    review: ReviewSettings
    sam3: _Sam3Section


@dataclass
class ReviewRun:
    url: str
    store: RunStore
    review: ReviewSettings
    sam3_model: str  # sam3.model as the run names it: a folder under the workspace or a hub id
    workspace: Path
    _media: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, run_dir: str) -> ReviewRun:
        try:
            store = RunStore.existing(str(run_dir))
        except NotARunError as exc:
            raise RunOpenError(str(exc)) from None
        snapshot = store.read_json("run.json")
        if not snapshot or "config" not in snapshot:
            raise RunOpenError(
                f"{run_dir}: no run.json with a config; start the run first (conceptengine run CONFIG)"
            )
        try:
            cfg = _RunConfig.model_validate(snapshot["config"])
        except ValidationError as exc:
            what = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise RunOpenError(f"{run_dir}/run.json: its config cannot be read ({what})") from None
        return cls(str(run_dir), store, cfg.review, cfg.sam3.model, Path(snapshot.get("workspace") or "."))

    @property
    def review_url(self) -> str:
        """The queue the run's HUMAN_REVIEW step fills: `review.url`, else RUN/review.db."""
        return run_queue_url(self.review.url, self.store)

    @property
    def lease_ttl_s(self) -> float:
        return float(self.review.lease_ttl_s)

    @property
    def token_ttl_s(self) -> float:
        return float(self.review.token_ttl_days) * 86400.0

    @property
    def sam3_path(self) -> str:
        """The run's SAM 3 checkpoint dir: its folder, or the hub snapshot of an id such as `facebook/sam3`."""
        try:
            return model_dir(self.workspace, self.sam3_model, "sam3.model")
        except ModelUnavailable:
            # Reviewing needs no model: the tracker names this one when a click correction first needs it.
            return self.sam3_model

    def media_uri(self, media_id: str) -> str | None:
        """The ingested URI of `media_id`, or None when the run never ingested it (or it was quarantined)."""
        with self._lock:
            if media_id not in self._media:
                self._load_media()
            return self._media.get(media_id)

    def _load_media(self) -> None:
        ref = StepRef(0, Step.INGEST)
        if self.store.manifest(ref) is None:
            return
        table = self.store.read_step(ref, "media")
        for mid, uri, err in zip(
            table["media_id"].to_pylist(), table["uri"].to_pylist(), table["error"].to_pylist(), strict=True
        ):
            if err is None:
                self._media[mid] = uri
