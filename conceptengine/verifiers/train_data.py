"""Training examples for the MV / EV verifiers: (media, noun phrase, masks shown, the human's answer).

An example stores what is needed to re-render the exact views the verifier saw (the image's URI and the
masks as COCO RLE), never the pictures themselves, so a run's whole review history fits in one small
Parquet table. MV examples hold one mask; EV examples hold the masks whose boxes were drawn (none for
"no box was proposed").

Two sources fill the same table:
- a run's human verdicts (`examples_from_run`), so the engine retrains on what its reviewers answered;
- the rendered world's oracle (`sim/verifier_examples.py`), for the demo's shipped checkpoints.

Train and hold-out are split by image (a hash of media_id), never by example: the many masks and NPs of
one image are strongly correlated, and a split by example would measure memorised images.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conceptengine.engine import ids
from conceptengine.engine.round_steps import Step
from conceptengine.engine.store import RunStore, StepRef
from conceptengine.engine.tables import VERDICTS
from conceptengine.verifiers.choices import EV, MV, ChoiceSet
from conceptengine.verifiers.routing import needs_human

log = logging.getLogger(__name__)

TASKS: dict[str, ChoiceSet] = {"mv": MV, "ev": EV}

EXAMPLE_MASK = pa.struct([("rle", pa.string()), ("box_xyxy", pa.list_(pa.float32(), 4))])

EXAMPLES = pa.schema(
    [
        ("task", pa.string()),  # mv | ev
        ("media_id", pa.string()),
        ("uri", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("noun_phrase", pa.string()),
        ("masks", pa.list_(EXAMPLE_MASK)),  # mv: the judged mask; ev: the masks whose boxes were shown
        ("choice", pa.string()),  # the answer to learn: a name of choices.MV / choices.EV
        ("annotator", pa.string()),  # human:ID / sim:ID for verdicts; oracle for the demo's examples
        ("origin", pa.string()),  # verdict, or how the demo made the masks (gt, shifted, eroded, ...)
        ("round", pa.int32()),
    ]
)

TRAIN, HOLDOUT = "train", "holdout"


def split_of(media_id: str, holdout_share: float, seed: int = 0) -> str:
    """`holdout` for a stable `holdout_share` of images, else `train`: an image always lands on one side."""
    if not 0.0 <= holdout_share < 1.0:
        raise ValueError(f"holdout_share must be in [0, 1), got {holdout_share}")
    bucket = ids.stable_seed(seed, "verifier-split", media_id) % 10_000
    return HOLDOUT if bucket < holdout_share * 10_000 else TRAIN


def split_examples(table: pa.Table, holdout_share: float, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """(train, holdout) by image."""
    sides = pa.array([split_of(m, holdout_share, seed) for m in table["media_id"].to_pylist()])
    return table.filter(pc.equal(sides, TRAIN)), table.filter(pc.equal(sides, HOLDOUT))


def check_examples(table: pa.Table, task: str | None = None) -> pa.Table:
    """Reject tables that are not EXAMPLES, or answers that are not choices of their task, by name."""
    missing = [n for n in EXAMPLES.names if n not in table.column_names]
    if missing:
        raise ValueError(f"verifier examples table lacks column(s) {missing}; expected {EXAMPLES.names}")
    table = table.select(EXAMPLES.names).cast(EXAMPLES)
    for i, (t, choice, n_masks) in enumerate(
        zip(
            table["task"].to_pylist(),
            table["choice"].to_pylist(),
            pc.list_value_length(table["masks"]).to_pylist(),
        )
    ):
        if t not in TASKS:
            raise ValueError(f"examples row {i}: task {t!r} is not one of {list(TASKS)}")
        if choice not in TASKS[t].names:
            raise ValueError(
                f"examples row {i}: {choice!r} is not a {t} choice; choices: {list(TASKS[t].names)}"
            )
        if t == "mv" and n_masks != 1:
            raise ValueError(f"examples row {i}: an mv example needs exactly one mask, got {n_masks}")
    if task is not None:
        table = table.filter(pc.equal(table["task"], task))
    return table


def read_examples(path: str | Path, task: str | None = None) -> pa.Table:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"verifier examples {p} do not exist (set examples: to a Parquet file or folder)"
        )
    return check_examples(pq.read_table(p), task)


# -- from a run's human verdicts -------------------------------------------------------------------------
def _by_people(verdicts: pa.Table) -> pa.Array:
    return pc.invert(pc.starts_with(verdicts["annotator"], "ai:"))


def _example(row: dict, task: str, masks: Iterable[dict], verdict: dict) -> dict:
    return {
        "task": task,
        "media_id": row["media_id"],
        "uri": row["uri"],
        "height": row["height"],
        "width": row["width"],
        "noun_phrase": row["noun_phrase"],
        "masks": [{"rle": m["rle"], "box_xyxy": list(m["box_xyxy"])} for m in masks],
        "choice": verdict["choice"],
        "annotator": verdict["annotator"],
        "origin": "verdict",
        "round": verdict["round"],
    }


def examples_from_run(store: RunStore | str, up_to_round: int | None = None) -> pa.Table:
    """Every human MV / EV verdict of the run (rounds <= up_to_round) joined with what the human saw.

    Join keys: an MV verdict's `subject_id` is the `instance_id` of one mask in the round's routed
    proposals; an EV verdict's `subject_id` is a `pair_id`, and the human saw that pair's boxes of the masks
    that survived MV (auto-accepted, or accepted by a human) — round/human_review.py builds the EV task
    so. Subjects are looked up across rounds, because an unanswered task rolls over to a later round.
    """
    store = RunStore(store) if isinstance(store, str) else store
    verdicts = store.read_every_round(Step.COMMIT, "verdicts", VERDICTS, where=_by_people)
    rows = [
        v
        for v in verdicts.to_pylist()
        if v["task"] in TASKS and (up_to_round is None or v["round"] <= up_to_round)
    ]
    pairs: dict[str, dict] = {}
    masks: dict[str, tuple[dict, dict]] = {}
    for r in store.rounds_done():
        if (up_to_round is not None and r > up_to_round) or not store.manifest(StepRef(r, Step.ROUTE)):
            continue
        # Only the pairs people saw: no human verdict is about another one.
        for row in store.read_step(StepRef(r, Step.ROUTE), "routed", where=needs_human).to_pylist():
            pairs[row["pair_id"]] = row
            for m in row["masks"] or []:
                masks[m["instance_id"]] = (row, m)
    human_mv = {
        v["subject_id"]: v["choice"] for v in sorted(rows, key=lambda v: v["round"]) if v["task"] == "mv"
    }
    out, unmatched = [], 0
    for v in rows:
        if v["task"] == "mv" and v["subject_id"] in masks:
            row, mask = masks[v["subject_id"]]
            out.append(_example(row, "mv", [mask], v))
        elif v["task"] == "ev" and v["subject_id"] in pairs:
            row = pairs[v["subject_id"]]
            shown = [
                m
                for m, how in zip(row["masks"] or [], row["mask_routes"] or [], strict=False)
                if how == "accept" or (how == "human" and human_mv.get(m["instance_id"]) == "Accept")
            ]
            out.append(_example(row, "ev", shown, v))
        else:
            unmatched += 1
    if unmatched:
        log.warning("%d human verdict(s) match no routed proposal in %s; skipped", unmatched, store.url)
    return pa.Table.from_pylist(out, schema=EXAMPLES)
