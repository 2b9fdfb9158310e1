"""Training and scoring the grounded MV scorer on verifier examples (train_data.EXAMPLES rows, task "mv").

Examples become tensors once (`prepare`): the two views of each judged mask (crops.py), its phrase, its
answer and, where known, the value of each slot the object has (the demo knows them from the rendered
world; a team's accepted answers could supply them through the ontology) and what the phrase accepts per
slot value (slots.phrase_needs). The loss is the verdict's (binary cross-entropy on Accept), the other
choices' (cross-entropy among the non-Accept answers), one cross-entropy per slot on the labelled examples,
which is what teaches the tower shapes, colours and patterns fast, and the phrase side's (binary
cross-entropy per slot value where the ontology says what the phrase accepts).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from conceptengine.engine import rle
from conceptengine.verifiers.choices import MV
from conceptengine.verifiers.grounded.crops import CHANNELS, object_views
from conceptengine.verifiers.grounded.model import GroundedMVModel
from conceptengine.verifiers.grounded.phrases import PhraseEmbedder

UNKNOWN = -1  # a slot value nobody labelled: no loss


@dataclass
class MVData:
    pixels: torch.Tensor  # (N, 8, S, S): crops.object_views
    phrases: list[str]
    choices: torch.Tensor  # (N,) index into MV.names
    slot_values: dict[str, torch.Tensor]  # slot -> (N,) value index or UNKNOWN
    # (N, sum of slot sizes): 1 where the phrase accepts the value, 0 where not, NaN rows unknown; None: none
    needs: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.phrases)


def prepare(
    rows: list[dict],
    read_image: Callable[[str], np.ndarray],
    slots: list[list],
    slot_labels: list[dict[str, str] | None] | None = None,
    crop_size: int = 48,
    needs: Callable[[str], np.ndarray | None] | None = None,
) -> MVData:
    """`rows`: EXAMPLES rows of task mv; `read_image(uri)` -> RGB uint8; `slot_labels[i]`: slot -> value
    name of example i's object (or None); `needs(phrase)`: what the phrase accepts per slot value
    (slots.phrase_needs), or None where unknown."""
    crops, cache = [], {}
    for r in rows:
        if r["uri"] not in cache:
            cache = {r["uri"]: read_image(r["uri"])}  # rows come grouped by image
        mask = r["masks"][0]
        decoded = rle.decode(mask["rle"], r["height"], r["width"])
        crops.append(object_views(cache[r["uri"]], decoded, mask["box_xyxy"], crop_size))
    values = {}
    for name, names in slots:
        index = {v: i for i, v in enumerate(names)}
        labels = slot_labels or [None] * len(rows)
        values[name] = torch.tensor([index.get((lab or {}).get(name), UNKNOWN) for lab in labels])
    return MVData(
        pixels=torch.from_numpy(np.stack(crops))
        if crops
        else torch.zeros((0, CHANNELS, crop_size, crop_size)),
        phrases=[r["noun_phrase"] for r in rows],
        choices=torch.tensor([MV.index(r["choice"]) for r in rows], dtype=torch.long),
        slot_values=values,
        needs=None
        if needs is None
        else needs_targets([r["noun_phrase"] for r in rows], needs, sum(len(v) for _, v in slots)),
    )


def needs_targets(phrases: list[str], needs: Callable[[str], np.ndarray | None], width: int) -> torch.Tensor:
    """(N, width) what each phrase accepts per slot value; NaN rows where unknown."""
    out = torch.full((len(phrases), width), float("nan"))
    each = {phrase: needs(phrase) for phrase in set(phrases)}  # an ontology lookup per distinct phrase
    for i, phrase in enumerate(phrases):
        known = each[phrase]
        if known is not None:
            out[i] = torch.from_numpy(known)
    return out


def needs_loss(
    head: torch.nn.Module | None, embeds: torch.Tensor, needs: torch.Tensor | None, idx: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy of the phrase side (`head`: phrase embedding -> a logit per slot value) against
    what the ontology says each phrase accepts, on the batch's rows where it says. A verdict is a product
    over the slots, too weak a signal to make the phrase side crisp on its own (the EV scorer trained without
    this gave "blue" 0.36 for "red star")."""
    if head is None or needs is None:
        return embeds.new_zeros(())
    target = needs[idx]
    told = ~target.isnan().any(-1)
    if not told.any():
        return embeds.new_zeros(())
    return F.binary_cross_entropy_with_logits(head(embeds[told]), target[told])


def verdict_loss(
    accept_logits: torch.Tensor, other_logits: torch.Tensor, choice: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy on Accept (choice 0), plus cross-entropy among the other choices where given."""
    loss = F.binary_cross_entropy_with_logits(accept_logits, (choice == 0).float())
    other = choice > 0
    if other.any():
        loss = loss + F.cross_entropy(other_logits[other], choice[other] - 1)
    return loss


def loss_on(model: GroundedMVModel, data: MVData, idx: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    pixels = data.pixels[idx]
    if torch.rand(()) < 0.5:  # mirror: no concept of the ontology depends on handedness here
        pixels = pixels.flip(-1)
    out = model(pixels, embeds[idx])
    loss = verdict_loss(out.accept_logits, out.other_logits, data.choices[idx])
    loss = loss + needs_loss(model.needs, embeds[idx], data.needs, idx)
    for name, logits in out.slot_logits.items():
        target = data.slot_values[name][idx]
        known = target != UNKNOWN
        if known.any():
            loss = loss + F.cross_entropy(logits[known], target[known])
    return loss


def fit(
    model: torch.nn.Module,
    n_items: int,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> dict:
    """AdamW with a one-cycle schedule for `steps` batches of shuffled item indices; `batch_loss(idx)` is
    the loss of one batch, `on_epoch(step, seconds)` runs after each pass over the items."""
    if not 1 <= batch_size <= n_items:
        raise ValueError(f"batch_size: must be between 1 and the {n_items} training items, got {batch_size}")
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    model.train()
    step, t0, last = 0, time.perf_counter(), float("nan")
    while step < steps:
        order = torch.randperm(n_items)
        for i in range(0, n_items - batch_size + 1, batch_size):
            loss = batch_loss(order[i : i + batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step, last = step + 1, loss.item()
            if step == steps:
                break
        if on_epoch is not None:
            on_epoch(step, time.perf_counter() - t0)
    model.eval()
    return {"steps": step, "seconds": round(time.perf_counter() - t0, 1), "final_loss": round(last, 4)}


def train(
    model: GroundedMVModel,
    data: MVData,
    embedder: PhraseEmbedder,
    steps: int,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> dict:
    """Train in place for `steps` batches; `on_epoch(step, seconds)` after each pass over the data."""
    embeds = embedder(data.phrases)
    return fit(
        model, len(data), lambda idx: loss_on(model, data, idx, embeds), steps, batch_size, lr, seed, on_epoch
    )


@torch.no_grad()
def accept_probs(
    model: GroundedMVModel, data: MVData, embedder: PhraseEmbedder, pixels: torch.Tensor | None = None
) -> np.ndarray:
    """P(Accept) per example (`pixels` replaces the data's crops, e.g. for the image-swap test)."""
    model.eval()
    pixels = data.pixels if pixels is None else pixels
    embeds = embedder(data.phrases)
    out = [
        model.choice_probs(pixels[i : i + 512], embeds[i : i + 512])[:, 0] for i in range(0, len(data), 512)
    ]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)
