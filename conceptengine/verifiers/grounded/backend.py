"""The grounded scorers behind the verifier interface: `verifier.model` / `verifier.ev_model` may name them.

`backends.make_backend` recognises a grounded checkpoint by its `model_type` and builds this backend instead
of the MLLM one; `verify.mask_verifier` / `verify.exhaustivity_verifier` then ask it with what it reads,
RGBA views and the bare noun phrase instead of a question:

- MV (`GroundedMVModel`): the mask's zoomed-in and zoomed-out crops, the mask as their alpha channel
  (`mask_views`, crops.py);
- EV (`RegionEVModel`, or the older `GroundedEVModel`): the whole image at the scorer's size, the proposed
  boxes filled in as alpha (`boxed_view`).

The answer has the MLLM backends' shape: probabilities over the task's choices, Accept first. Each scorer
answers its own task only: `task` says which.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from conceptengine.engine import rle
from conceptengine.verifiers.backend import check_request
from conceptengine.verifiers.choices import EV, MV
from conceptengine.verifiers.grounded.crops import VIEW_CHANNELS, VIEW_SCALES, object_views
from conceptengine.verifiers.grounded.ev_model import GroundedEVConfig, GroundedEVModel
from conceptengine.verifiers.grounded.ev_train import box_channel, image_tensor, normalised_boxes
from conceptengine.verifiers.grounded.model import GroundedMVConfig, GroundedMVModel
from conceptengine.verifiers.grounded.phrases import PhraseEmbedder
from conceptengine.verifiers.grounded.region_ev import RegionEVConfig, RegionEVModel

# model_type -> (task, model class): every grounded scorer a checkpoint may hold
SCORERS = {
    GroundedMVConfig.model_type: ("mv", GroundedMVModel),
    GroundedEVConfig.model_type: ("ev", GroundedEVModel),
    RegionEVConfig.model_type: ("ev", RegionEVModel),
}
CHOICES = {"mv": MV, "ev": EV}


def _model_type(path: str) -> str | None:
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def grounded_task(path: str) -> str | None:
    """ "mv" or "ev" for a local checkpoint saved from a grounded scorer, None for anything else."""
    scorer = SCORERS.get(_model_type(path))
    return None if scorer is None else scorer[0]


def load_scorer(path: str) -> GroundedMVModel | GroundedEVModel | RegionEVModel:
    """The grounded scorer saved at `path` (a local folder), whichever kind it is."""
    scorer = SCORERS.get(_model_type(path))
    if scorer is None:
        raise ValueError(f"{path!r} is not a grounded MV or EV scorer's checkpoint")
    return scorer[1].from_pretrained(path)


def _rgba(rgb: np.ndarray, alpha: np.ndarray) -> Image.Image:
    """(H, W, 3) and (H, W) floats in [0, 1] as one RGBA image, so the view travels like any other."""
    stacked = np.concatenate([rgb, alpha[..., None]], axis=-1)
    return Image.fromarray(np.round(stacked * 255).astype(np.uint8), "RGBA")


def mask_views(image: np.ndarray, counts: str, box_xyxy: Sequence[float], size: int) -> list[Image.Image]:
    """One mask as the MV scorer reads it: its zoomed-in and zoomed-out crops, the mask as alpha."""
    views = object_views(image, rle.decode(counts, image.shape[0], image.shape[1]), box_xyxy, size)
    return [_rgba(v[:3].transpose(1, 2, 0), v[3]) for v in np.split(views, len(views) // VIEW_CHANNELS)]


def boxed_view(image: np.ndarray, boxes: Sequence[Sequence[float]], size: int) -> Image.Image:
    """One image-phrase pair as the EV scorer reads it: the image at `size`, the boxes filled in as alpha."""
    rgb = image_tensor(image, size).numpy().transpose(1, 2, 0) / 255.0
    alpha = box_channel(normalised_boxes(boxes, image.shape[0], image.shape[1]), size).numpy()
    return _rgba(rgb, alpha)


class GroundedBackend:
    """Scores the questions of one task, each its RGBA views (`mask_views` / `boxed_view`) and a phrase."""

    def __init__(
        self, model_path: str, device: str = "cpu", batch_size: int = 64, version: str | None = None
    ):
        task = grounded_task(model_path)
        if task is None:
            raise ValueError(f"verifier model {model_path!r} is not a grounded MV or EV scorer's checkpoint")
        if batch_size < 1:
            raise ValueError(f"verifier batch_size must be >= 1, got {batch_size}")
        self.choices = CHOICES[task]
        self.task = task
        self.model = load_scorer(model_path).to(device).eval()
        self.device = torch.device(device)
        self.embedder = PhraseEmbedder(self.model.config.text_model)
        config = self.model.config
        self.view_size = int(config.crop_size if task == "mv" else config.image_size)
        self.views = len(VIEW_SCALES) if task == "mv" else 1
        self.batch_size = batch_size
        self.version = version or Path(model_path).name or str(model_path)

    def score(
        self, views: list[list[Image.Image]], prompts: list[str], choice_tokens: list[str]
    ) -> np.ndarray:
        check_request(views, prompts, choice_tokens)
        if list(choice_tokens) != list(self.choices.letters):
            other = "verifier.ev_model" if self.task == "mv" else "verifier.model"
            raise ValueError(
                f"this grounded scorer answers {self.task} only (choices {list(self.choices.letters)}), "
                f"not {choice_tokens!r}; give the other task its own checkpoint ({other})"
            )
        out = np.zeros((len(prompts), len(choice_tokens)), dtype=np.float32)
        for start in range(0, len(prompts), self.batch_size):
            stop = start + self.batch_size
            pixels = torch.from_numpy(np.stack([self._pixels(v) for v in views[start:stop]])).to(self.device)
            embeds = self.embedder(prompts[start:stop]).to(self.device)
            out[start:stop] = self.model.choice_probs(pixels, embeds).float().cpu().numpy()
        return out

    def _pixels(self, view: list[Image.Image]) -> np.ndarray:
        size = (self.view_size, self.view_size)
        if len(view) != self.views or any(v.mode != "RGBA" or v.size != size for v in view):
            got = [(v.mode, v.size) for v in view]
            raise ValueError(
                f"the grounded {self.task} scorer reads {self.views} RGBA {self.view_size} px view(s) per "
                f"question, got {got}; build its requests with verify.mask_verifier / "
                "verify.exhaustivity_verifier"
            )
        return np.concatenate([np.asarray(v, dtype=np.float32).transpose(2, 0, 1) / 255.0 for v in view])
