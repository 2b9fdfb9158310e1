"""Load SAM 3's input processing (image pixels + prompt tokens) from a checkpoint directory.

`Sam3Processor.from_pretrained` is the reference path and is used whenever it can be: it needs torchvision,
whose CPU build is not on PyPI for every torch release. Without torchvision, `Sam3PixelProcessor` reproduces
Sam3ImageProcessor's arithmetic from the same `processor_config.json` (bilinear antialiased resize of the
uint8 image, then (x * rescale - mean) / std), bit-for-bit equal on the cases the tests check, and the
tokenizer is loaded with `AutoTokenizer` from the same files. Either way the engine reads one checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, Sam3Processor

from conceptengine.engine.checkpoints import local_checkpoint
from conceptengine.model.tiny import MAX_TEXT_LEN


def torchvision_usable() -> bool:
    try:
        import torchvision  # noqa: F401 - optional: Sam3Processor's fast image processor needs it
    except Exception:  # noqa: BLE001 - a CUDA torchvision next to a CPU torch fails at import with RuntimeError
        return False
    return True


@dataclass(frozen=True)
class PixelSpec:
    """Sam3ImageProcessor's arithmetic split in two: uint8 resize (CPU stage) and normalize (model actor).

    `Sam3PixelProcessor` is the two halves in a row; the tests check both against transformers'
    Sam3ImageProcessor.
    """

    height: int
    width: int
    do_resize: bool
    do_rescale: bool
    do_normalize: bool
    rescale_factor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> PixelSpec:
        """From the `image_processor` dict of processor_config.json (or an image processor's to_dict())."""
        size = cfg.get("size") or {"height": 1008, "width": 1008}
        if int(cfg.get("resample", 2)) != 2:
            raise ValueError(
                f"only bilinear resampling (2) is supported; processor config has {cfg['resample']}"
            )
        return cls(
            height=int(size["height"]),
            width=int(size["width"]),
            do_resize=bool(cfg.get("do_resize", True)),
            do_rescale=bool(cfg.get("do_rescale", True)),
            do_normalize=bool(cfg.get("do_normalize", True)),
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
            mean=tuple(float(v) for v in cfg.get("image_mean", [0.5, 0.5, 0.5])),
            std=tuple(float(v) for v in cfg.get("image_std", [0.5, 0.5, 0.5])),
        )

    @classmethod
    def from_checkpoint(cls, path: str) -> PixelSpec:
        cfg_path = Path(path) / "processor_config.json"
        if not cfg_path.exists():
            raise FileNotFoundError(f"{cfg_path} is missing: {path} is not a saved Sam3Processor directory")
        return cls.from_config(json.loads(cfg_path.read_text()).get("image_processor", {}))

    def resize(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, h, w) uint8 at the model's input size."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"resize expects an (H, W, 3) uint8 image; got {image.shape} {image.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        if self.do_resize and tuple(t.shape[-2:]) != (self.height, self.width):
            t = F.interpolate(
                t, size=(self.height, self.width), mode="bilinear", antialias=True, align_corners=False
            )
        return t[0].contiguous().numpy()

    def normalize(self, resized: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) uint8 on any device -> float32 pixel_values on that device."""
        x = resized.to(torch.float32)
        if self.do_normalize:
            # The processor's fused form, (x - mean / r) / (std / r); constants computed on CPU so a GPU
            # actor gets the very same float32 values.
            scale = self.rescale_factor if self.do_rescale else 1.0
            mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1) * (1.0 / scale)
            std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1) * (1.0 / scale)
            return (x - mean.to(x.device)) / std.to(x.device)
        if self.do_rescale:
            return x * self.rescale_factor
        return x


class Sam3PixelProcessor:
    """Sam3ImageProcessor's resize / rescale / normalize in plain torch, configured from its saved dict."""

    def __init__(self, cfg: dict[str, Any]):
        self.spec = PixelSpec.from_config(cfg)
        self.size = (self.spec.height, self.spec.width)

    def __call__(self, images: np.ndarray | list[np.ndarray], return_tensors: str = "pt") -> dict[str, Any]:
        batch = images if isinstance(images, list) else [images]
        out = [self.spec.normalize(torch.from_numpy(self.spec.resize(img))[None]) for img in batch]
        return {"pixel_values": torch.cat(out), "original_sizes": [list(img.shape[:2]) for img in batch]}


@dataclass
class Sam3Inputs:
    """The two halves of Sam3Processor, used separately so that image and text work can be cached apart."""

    image_processor: Any
    tokenizer: Any
    source: str  # "Sam3Processor" or "fallback"

    def pixels(self, image: np.ndarray) -> torch.Tensor:
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"]

    def tokens(self, noun_phrases: list[str]) -> dict[str, torch.Tensor]:
        # Same call as Sam3Processor(text=...), plus truncation so an over-long prompt cannot overflow the
        # text encoder's 32 positions.
        enc = self.tokenizer(
            noun_phrases, padding="max_length", max_length=MAX_TEXT_LEN, truncation=True, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def load_sam3_inputs(path: str) -> Sam3Inputs:
    path = local_checkpoint(path)
    if torchvision_usable():
        proc = Sam3Processor.from_pretrained(path)
        return Sam3Inputs(proc.image_processor, proc.tokenizer, "Sam3Processor")

    cfg_path = Path(path) / "processor_config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path} is missing: {path} is not a saved Sam3Processor directory")
    cfg = json.loads(cfg_path.read_text())
    return Sam3Inputs(
        Sam3PixelProcessor(cfg.get("image_processor", {})), AutoTokenizer.from_pretrained(path), "fallback"
    )
