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
from conceptengine.engine.steps import StepResult, run_block_step
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


def propose_nps(ctx: RunContext, r: int, media: StepResult) -> StepResult:
    chosen = select_media(ctx, media, r)
    cfg = ctx.cfg.ontology
    params = cfg.model_dump(include=set(NPProposalSettings.model_fields)) | {
        "ontology_path": ctx.ontology_path,
        "captioner": captioner_factory(ctx),
        "captions_path": resolve(ctx.workspace, cfg.captions_path) if cfg.positives_from == "file" else None,
        "ontology_guesses": cfg.positives_from == "ontology",
        "round": r,
        "seed": ctx.cfg.seed,
    }

    def stream(step_url: str):
        # The round's selection is the step's first table; the workers read it and write the pairs.
        selection = write_block(step_url, "media", chosen, keep_empty=True)
        source = posixpath.join(step_url, selection["file"])
        chain = [Link(get_stage("propose_nps"), cfg.stage, params)]
        files = ctx.runner.stream_chain(chain, [source], step_url, {"pairs": None}, PAIRS)
        return files | {"media": [selection]}, {"images": chosen.num_rows}

    return run_block_step(
        ctx,
        StepRef(r, Step.PROPOSE_NPS),
        [media.fingerprint],
        stream,
        sort_by={"pairs": "pair_id", "media": "media_id"},
    )
