"""COMMIT: the round's decisions become the dataset: annotations and verdicts (Parquet), WebDataset shards.

A block step (engine/block_files.py): the workers join the routed blocks with HUMAN_REVIEW's decisions
(round/commit_stage.py) and write the annotation and AI-verdict rows, then group the annotations by image
and write the shards; the people's verdicts, which HUMAN_REVIEW already holds, are added as one more block.
The manifest, written last, lists every file, so a crash mid-commit never leaves a half-committed round that
looks finished, and readers of the committed dataset go through it (`RunStore.read_every_round`,
`committed_shards`).
"""

from __future__ import annotations

import functools
import posixpath

from conceptengine.engine.block_files import total_stats, write_block
from conceptengine.engine.round_steps import Step
from conceptengine.engine.runner import Link
from conceptengine.engine.steps import StepResult, run_block_step
from conceptengine.engine.store import RunStore, StepRef
from conceptengine.engine.tables import ANNOTATIONS, VERDICTS
from conceptengine.round.annotations import ai_verdict_rows, annotation_rows, commit_counts
from conceptengine.round.commit_stage import CommitStage
from conceptengine.round.context import RunContext
from conceptengine.round.shards import SHARD_MAX_IMAGES, SHARDS, shard_sample, write_shard

COMMITTED = {"annotations": ANNOTATIONS, "verdicts": VERDICTS}


def committed_shards(store: RunStore, up_to_round: int | None = None) -> list[str]:
    """The WebDataset shards the finished COMMIT steps list (of rounds <= up_to_round), in round order."""
    return [
        store.url_for(rel)
        for r in store.rounds_with(Step.COMMIT)
        if up_to_round is None or r <= up_to_round
        for rel in store.manifest(StepRef(r, Step.COMMIT)).get("extra", {}).get("shards", [])
    ]


def commit_round(ctx: RunContext, r: int, routed: StepResult, review: StepResult) -> StepResult:
    def stream(step_url: str):
        params = {"round": r, "decisions_urls": tuple(review.urls("decisions"))}
        chain = [Link(CommitStage, ctx.cfg.verifier.stage, params)]
        outputs = {"annotations": annotation_rows, "verdicts": ai_verdict_rows}
        files = ctx.runner.stream_chain(
            chain, routed.urls("routed"), step_url, outputs, COMMITTED, block_stats=commit_counts
        )
        # People's answers: as many as people have time for. Cast, because a table read back from Parquet names
        # its list items differently, and the block's name is a hash of its bytes.
        human = write_block(step_url, "verdicts", review["verdicts"].cast(VERDICTS))
        files["verdicts"] += [human] if human else []
        annotations = [f for f in files["annotations"] if f["rows"]]
        files[SHARDS] = (
            ctx.runner.stream_groups(
                [posixpath.join(step_url, f["file"]) for f in annotations],
                "media_id",
                shard_sample,
                functools.partial(write_shard, step_url),
                SHARD_MAX_IMAGES,
            )
            if annotations
            else []
        )
        extra = {
            "committed_pairs": sum(f["rows"] for f in files["annotations"]),
            "committed_negative": total_stats(files["annotations"] + files["verdicts"]).get(
                "committed_negative", 0
            ),
            "committed_masks": sum(f["lists"].get("masks", 0) for f in files["annotations"]),
            "shards": [posixpath.join(StepRef(r, Step.COMMIT).rel, f["file"]) for f in files[SHARDS]],
        }
        return files, extra

    return run_block_step(
        ctx,
        StepRef(r, Step.COMMIT),
        [routed.fingerprint, review.fingerprint],
        stream,
        sort_by={"annotations": "pair_id"},
    )
