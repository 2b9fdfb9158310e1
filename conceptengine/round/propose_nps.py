"""PROPOSE_NPS: the round's images and, per image, the noun phrases to ask SAM 3 about (hard negatives too)."""

from __future__ import annotations

import posixpath
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc

from conceptengine.engine.block_files import write_block
from conceptengine.engine.round_steps import Step
from conceptengine.engine.runner import Link
from conceptengine.engine.stage import get_stage
from conceptengine.engine.steps import BlockStep, StepResult
from conceptengine.engine.store import StepRef
from conceptengine.engine.tables import PAIRS
from conceptengine.ontology.captioner import CaptionerFactory
from conceptengine.ontology.np_proposal import NPProposalSettings
from conceptengine.round.context import RunContext, resolve
from conceptengine.verifiers.captioner import ModelCaptioner


def select_media(ctx: RunContext, media: StepResult, round_index: int) -> pa.Table:
    """Round r (from 1) takes the next `images_per_round` healthy train images, in media_id order.

    One pass over the ingested media table's ids, file by file, keeps the first r x images_per_round of them,
    then a second pass reads the round's rows: the driver holds the ids the rounds so far took, never the pool.
    """
    if round_index < 1:
        raise ValueError(f"rounds count from 1; got round {round_index}")
    n = ctx.cfg.rounds.images_per_round
    first = (round_index - 1) * n
    kept = pa.array([], pa.string())
    for part in media.parts("media", ["media_id", "error", "split"]):
        healthy = pc.and_(pc.is_null(part["error"]), pc.equal(part["split"], "train"))
        ids = pa.concat_arrays([kept, part.filter(healthy)["media_id"].combine_chunks().cast(pa.string())])
        kept = ids.take(pc.sort_indices(ids))[: first + n]
    chosen = kept[first:]
    rows = media.read("media", lambda t: pc.is_in(t["media_id"], value_set=chosen))
    return rows.sort_by([("media_id", "ascending")])


def captioner_factory(ctx: RunContext) -> CaptionerFactory | None:
    """The captioner `ontology.positives_from` chooses: a captioning model, else the run's sources' own (the
    demo's oracle captioner); None for precomputed captions and ontology guesses, which the stage reads."""
    cfg = ctx.cfg.ontology
    if cfg.positives_from == "model":
        return partial(ModelCaptioner, ctx.inputs.captioner_model_path, device=cfg.captioner_device)
    return ctx.sources.captioner if cfg.positives_from is None else None


def propose_nps_step(ctx: RunContext, r: int, media: StepResult) -> BlockStep:
    """The step that starts a round's stream (pipelines/image.py): its first table is the round's selection,
    which it writes itself and its chain reads."""
    cfg = ctx.cfg.ontology
    params = cfg.model_dump(include=set(NPProposalSettings.model_fields)) | {
        "ontology_path": ctx.ontology_path,
        "captioner": captioner_factory(ctx),
        "captions_path": resolve(ctx.workspace, cfg.captions_path) if cfg.positives_from == "file" else None,
        "ontology_guesses": cfg.positives_from == "ontology",
        "round": r,
        "seed": ctx.cfg.seed,
    }

    def sources(step_url: str):
        chosen = select_media(ctx, media, r)  # only when the step runs: a resumed round reuses it
        selection = write_block(step_url, "media", chosen, keep_empty=True)
        return [posixpath.join(step_url, selection["file"])], {"media": [selection]}

    return BlockStep(
        ref=StepRef(r, Step.PROPOSE_NPS),
        inputs=[media.fingerprint],
        chain=[Link(get_stage("propose_nps"), cfg.stage, params)],
        outputs={"pairs": None},
        schema=PAIRS,
        sources=sources,
        sort_by={"pairs": "pair_id", "media": "media_id"},
        extra=lambda files: {"images": files["media"][0]["rows"]},
    )
