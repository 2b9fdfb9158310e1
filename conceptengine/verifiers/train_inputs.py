"""From example rows to model inputs, through exactly the code the engine scores with.

Views and prompts come from `MaskVerifier.requests` / `ExhaustivityVerifier.request` (verify.py) and the
token batch from `TransformersBackend.encode` (the model's own processor and chat template, left padding),
so a verifier is trained on the very inputs the ai_verify stage will give it. The answer is read where the
backend reads it: the next-token logits at the last position, restricted to the task's choice letters.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from conceptengine.engine.media import load_rgb
from conceptengine.verifiers.train_data import TASKS
from conceptengine.verifiers.transformers_backend import _OWN_POSITION_IDS, TransformersBackend
from conceptengine.verifiers.verify import ExhaustivityVerifier, MaskVerifier, Request

IMAGE_CACHE = 512  # decoded images kept per dataset: an image's many NPs and masks decode once


class ExampleDataset(torch.utils.data.Dataset):
    """Rows of one task's EXAMPLES table -> (Request, answer index). Items are keyed like the SAM 3 trainer's
    sampler yields them, `(index, epoch)`, so the step sampler is shared."""

    def __init__(self, table: pa.Table, task: str, view_size: int):
        if task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
        self.rows = table.to_pylist()
        self.task = task
        self.choices = TASKS[task]
        self.labels = [self.choices.index(r["choice"]) for r in self.rows]
        # Only their (pure) request builders are used here, so they need no backend.
        kind = MaskVerifier if task == "mv" else ExhaustivityVerifier
        self.verifier = kind(None, view_size)  # type: ignore[arg-type]
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.rows)

    def image(self, uri: str) -> np.ndarray:
        if uri in self._images:
            self._images.move_to_end(uri)
        else:
            self._images[uri] = load_rgb(uri)
            if len(self._images) > IMAGE_CACHE:
                self._images.popitem(last=False)
        return self._images[uri]

    def request(self, i: int) -> Request:
        row = self.rows[i]
        image = self.image(row["uri"])
        if self.task == "mv":
            return self.verifier.requests(image, row["noun_phrase"], row["masks"])[0]
        return self.verifier.request(image, row["noun_phrase"], [m["box_xyxy"] for m in row["masks"]])

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Request, int]:
        i = key[0] if isinstance(key, tuple) else key
        return self.request(i), self.labels[i]


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor  # (B,) index into the task's choices


class Collator:
    """Encodes requests with the backend's processor and chat template (left padding: the answer is last)."""

    def __init__(self, backend: TransformersBackend):
        self.backend = backend

    def __call__(self, items: list[tuple[Request, int]]) -> Batch:
        reqs = [r for r, _ in items]
        inputs = self.backend.encode([r.views for r in reqs], [r.prompt for r in reqs])
        return Batch({k: v.cpu() for k, v in inputs.items()}, torch.tensor([y for _, y in items]))


def choice_logits(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], letter_ids: list[int]
) -> torch.Tensor:
    """(B, n_choices) logits of the answer letters at each row's last position, with gradients.

    Position ids follow the attention mask exactly as `TransformersBackend.next_token_logits` builds them,
    so a padded training row sees the positions it will see when scored.
    """
    mask = inputs["attention_mask"]
    if not bool(mask[:, -1].all()):
        raise ValueError(
            "verifier training batches must be left-padded (the answer is read at the last position)"
        )
    kwargs = dict(inputs)
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in _OWN_POSITION_IDS:
        kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(**kwargs, logits_to_keep=1).logits[:, -1, :]
    return logits[:, letter_ids].float()
