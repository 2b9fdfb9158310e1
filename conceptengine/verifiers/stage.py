"""AI_VERIFY: score every proposed mask (MV) and every image-NP pair (EV) with the MLLM verifier.

Input is the pair-level proposals table; output adds, per row, `mv_probs` (one probability vector per
mask, in mask order, columns as `choices.MV`), `ev_probs` (columns as `choices.EV`) and the verifier's
version. Each image is decoded once per batch however many NPs it has, and the requests of all
pairs are pooled into full backend batches. A row that cannot be verified (unreadable image, bad
RLE) gets an `error` instead of stopping the batch; rows that arrive with an error pass through.

The backend (transformers, vLLM or an OpenAI-compatible server) comes from `backends.make_backend`;
MV and EV may use different checkpoints (`ev_model_path`). Under the Ray runner the stage's actors get
`num_gpus` from `verifier.stage.num_gpus`, and a vLLM backend sizes its memory to that share.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from conceptengine.engine.checkpoints import local_checkpoint
from conceptengine.engine.media import check_size, load_rgb
from conceptengine.engine.stage import Stage, StageConfig, parse_params, register
from conceptengine.engine.tables import OUTPUT_FIELDS, PROPOSALS, VERIFIED
from conceptengine.verifiers.backend import VerifierBackend
from conceptengine.verifiers.backend_factory import make_backend
from conceptengine.verifiers.retry import ServerUnusable
from conceptengine.verifiers.settings import AIVerifyParams
from conceptengine.verifiers.verify import Request, exhaustivity_verifier, mask_verifier


@register
class AIVerifyStage(Stage):
    name = "ai_verify"
    input_columns = tuple(PROPOSALS.names)
    output_columns = tuple(VERIFIED.names)

    def __init__(self, cfg: StageConfig, **params: Any):
        super().__init__(cfg, **params)
        self.p = parse_params(self.name, AIVerifyParams, params)
        self.backend: VerifierBackend | None = None

    def setup(self) -> None:
        separate_ev = bool(self.p.ev_model_path) and self.p.ev_model_path != self.p.model_path
        share = self.cfg.num_gpus / (2 if separate_ev else 1)  # two models in one actor split its GPU share
        # a remote run's retrained verifiers load from their local mirrors; other names pass through
        self.backend = make_backend(self.p, local_checkpoint(self.p.model_path), gpu_share=share)
        ev_backend = self.backend
        if separate_ev:
            ev_backend = make_backend(self.p, local_checkpoint(self.p.ev_model_path), gpu_share=share)
        for field, backend, task in (("model", self.backend, "mv"), ("ev_model", ev_backend, "ev")):
            if getattr(backend, "task", task) != task:  # a grounded scorer answers its own task only
                unset = (
                    " (unset: it defaults to verifier.model)"
                    if field == "ev_model" and not separate_ev
                    else ""
                )
                raise ValueError(
                    f"verifier.{field}{unset}: {backend.version} is a grounded {backend.task} scorer, which "
                    f"cannot answer {task}; set verifier.{field} to an MLLM or a grounded {task} scorer"
                )
        # One column records both: "mv-version+ev-version" when MV and EV are different checkpoints.
        self.version = self.p.version or "+".join(dict.fromkeys([self.backend.version, ev_backend.version]))
        self.mv = mask_verifier(self.backend, view_size=self.p.view_size)
        self.ev = exhaustivity_verifier(ev_backend, view_size=self.p.view_size)

    # -- per-row work ------------------------------------------------------------------------------

    def _requests(
        self, row: dict, images: dict[str, np.ndarray | ValueError]
    ) -> tuple[list[Request], Request]:
        uri = row["uri"]
        if uri not in images:  # decode each image once, however many NPs it carries
            try:
                images[uri] = load_rgb(uri)
            except ValueError as exc:  # CorruptMediaError
                images[uri] = exc
            except OSError as exc:  # missing or unreadable file
                images[uri] = ValueError(f"cannot read image {uri}: {type(exc).__name__}")
        image = images[uri]
        if isinstance(image, ValueError):
            raise image
        check_size(image, uri, row["width"], row["height"])  # per row: rows of one URI may disagree
        masks = row["masks"] or []
        mv = self.mv.requests(image, row["noun_phrase"], masks)
        ev = self.ev.request(image, row["noun_phrase"], [m["box_xyxy"] for m in masks])
        return mv, ev

    def _score(self, mv_reqs: list[list[Request]], ev_reqs: list[Request]) -> list[tuple | Exception]:
        """Pooled scoring; if the pooled call fails, retry row by row so one bad row fails alone.

        An unusable verifier server (down after all retries, wrong key or model name) is not a row's
        fault: it ends the step instead, so `run --resume` scores those rows once the server is back
        rather than quarantining a whole round.
        """
        try:
            flat = self.mv.score_requests([r for rs in mv_reqs for r in rs])
            evp = self.ev.score_requests(ev_reqs)
        except ServerUnusable:
            raise
        except Exception:  # noqa: BLE001 - isolate the failing row below
            out: list[tuple | Exception] = []
            for rs, e in zip(mv_reqs, ev_reqs, strict=True):
                try:
                    out.append((self.mv.score_requests(rs), self.ev.score_requests([e])[0]))
                except ServerUnusable:
                    raise
                except Exception as exc:  # noqa: BLE001 - becomes the row's error
                    out.append(exc)
            return out
        out, k = [], 0
        for i, rs in enumerate(mv_reqs):
            out.append((flat[k : k + len(rs)], evp[i]))
            k += len(rs)
        return out

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_input(batch)
        if self.backend is None:
            self.setup()
        rows = batch.select(list(self.input_columns)).to_pylist()
        errors = [r["error"] for r in rows]
        mv_probs: list[list[list[float]] | None] = [None] * len(rows)
        ev_probs: list[list[float] | None] = [None] * len(rows)
        versions: list[str | None] = [None] * len(rows)

        images: dict[str, np.ndarray | ValueError] = {}
        todo, mv_reqs, ev_reqs = [], [], []
        for i, row in enumerate(rows):
            if row["error"] is not None:
                continue
            try:
                mv, ev = self._requests(row, images)
            except ValueError as exc:
                errors[i] = f"ai_verify: {exc}"
                continue
            todo.append(i)
            mv_reqs.append(mv)
            ev_reqs.append(ev)

        for i, result in zip(todo, self._score(mv_reqs, ev_reqs), strict=True):
            if isinstance(result, Exception):
                errors[i] = f"ai_verify: verifier failed: {type(result).__name__}: {result}"
                continue
            mv_probs[i] = result[0].astype(np.float32).tolist()
            ev_probs[i] = result[1].astype(np.float32).tolist()
            versions[i] = self.version

        # extra columns the runner carries along pass through; a re-run replaces earlier verifier outputs
        out = batch.drop_columns([n for n, _ in OUTPUT_FIELDS if n in batch.column_names])
        out = out.set_column(out.schema.get_field_index("error"), "error", pa.array(errors, pa.string()))
        for (name, typ), values in zip(OUTPUT_FIELDS, (mv_probs, ev_probs, versions), strict=True):
            out = out.append_column(pa.field(name, typ), pa.array(values, typ))
        return out
