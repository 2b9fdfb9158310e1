"""The grounded MV scorer behind the verifier interface: `verifier.model` may name its checkpoint.

`backends.make_backend` recognises the checkpoint by its `model_type` and builds this backend instead of
the MLLM one; `verify.mask_verifier` then asks it with what it reads (`GroundedMaskVerifier`): per mask,
the object crop with the mask as its alpha channel, and the bare noun phrase instead of a question. The
answer has the MLLM backends' shape: probabilities over the MV choices, Accept first.
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
from conceptengine.verifiers.choices import MV
from conceptengine.verifiers.grounded.crops import object_crop
from conceptengine.verifiers.grounded.model import GroundedMVConfig, GroundedMVModel
from conceptengine.verifiers.grounded.phrases import PhraseEmbedder

#: What a request's one view is: the object crop as RGBA, alpha = the mask (see `crop_view`).
INPUT_STYLE = "object_crop"


def is_grounded_checkpoint(path: str) -> bool:
    """True for a local checkpoint saved from GroundedMVModel (its config.json names the model type)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == GroundedMVConfig.model_type
    except (OSError, ValueError):
        return False


def crop_view(image: np.ndarray, counts: str, box_xyxy: Sequence[float], size: int) -> Image.Image:
    """One mask as the scorer reads it, packed as an RGBA image so it travels like any verifier view."""
    mask = rle.decode(counts, image.shape[0], image.shape[1])
    crop = object_crop(image, mask, box_xyxy, size)
    return Image.fromarray(np.round(crop.transpose(1, 2, 0) * 255).astype(np.uint8), "RGBA")


class GroundedBackend:
    """Scores MV requests whose views are `crop_view` images and whose prompts are noun phrases."""

    input_style = INPUT_STYLE

    def __init__(
        self, model_path: str, device: str = "cpu", batch_size: int = 256, version: str | None = None
    ):
        if batch_size < 1:
            raise ValueError(f"verifier batch_size must be >= 1, got {batch_size}")
        self.model = GroundedMVModel.from_pretrained(model_path).to(device).eval()
        self.device = torch.device(device)
        self.embedder = PhraseEmbedder(self.model.config.text_model)
        self.crop_size = int(self.model.config.crop_size)
        self.batch_size = batch_size
        self.version = version or Path(model_path).name or str(model_path)

    def score(
        self, views: list[list[Image.Image]], prompts: list[str], choice_tokens: list[str]
    ) -> np.ndarray:
        check_request(views, prompts, choice_tokens)
        if list(choice_tokens) != list(MV.letters):
            raise ValueError(
                f"the grounded scorer answers mask verification only (choices {list(MV.letters)}), "
                f"not {choice_tokens!r}; give EV its own checkpoint (verifier.ev_model)"
            )
        out = np.zeros((len(prompts), len(choice_tokens)), dtype=np.float32)
        for start in range(0, len(prompts), self.batch_size):
            stop = start + self.batch_size
            pixels = torch.from_numpy(np.stack([self._pixels(v) for v in views[start:stop]])).to(self.device)
            embeds = self.embedder(prompts[start:stop]).to(self.device)
            out[start:stop] = self.model.choice_probs(pixels, embeds).float().cpu().numpy()
        return out

    def _pixels(self, view: list[Image.Image]) -> np.ndarray:
        if len(view) != 1 or view[0].mode != "RGBA" or view[0].size != (self.crop_size, self.crop_size):
            got = [(v.mode, v.size) for v in view]
            raise ValueError(
                f"the grounded scorer reads one RGBA {self.crop_size} px object crop per mask, got {got}; "
                "build its requests with verify.mask_verifier"
            )
        return np.asarray(view[0], dtype=np.float32).transpose(2, 0, 1) / 255.0
