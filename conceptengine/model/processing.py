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

from conceptengine.model.tiny import MAX_TEXT_LEN


def torchvision_usable() -> bool:
    try:
        import torchvision  # noqa: F401 - optional: Sam3Processor's fast image processor needs it
    except Exception:  # noqa: BLE001 - a CUDA torchvision next to a CPU torch fails at import with RuntimeError
        return False
    return True


class Sam3PixelProcessor:
    """Sam3ImageProcessor's resize / rescale / normalize in plain torch, configured from its saved dict."""

    def __init__(self, cfg: dict[str, Any]):
        size = cfg.get("size", {"height": 1008, "width": 1008})
        self.size = (int(size["height"]), int(size["width"]))
        self.do_resize = bool(cfg.get("do_resize", True))
        self.do_rescale = bool(cfg.get("do_rescale", True))
        self.do_normalize = bool(cfg.get("do_normalize", True))
        self.rescale_factor = float(cfg.get("rescale_factor", 1 / 255))
        self.mean = torch.tensor(cfg.get("image_mean", [0.5, 0.5, 0.5]), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("image_std", [0.5, 0.5, 0.5]), dtype=torch.float32).view(1, 3, 1, 1)
        if int(cfg.get("resample", 2)) != 2:
            raise ValueError(
                f"Sam3PixelProcessor supports bilinear resampling only; config has {cfg['resample']}"
            )

    def __call__(self, images: np.ndarray | list[np.ndarray], return_tensors: str = "pt") -> dict[str, Any]:
        batch = images if isinstance(images, list) else [images]
        out = []
        for img in batch:
            t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
            if self.do_resize and tuple(t.shape[-2:]) != self.size:
                t = F.interpolate(t, size=self.size, mode="bilinear", antialias=True, align_corners=False)
            x = t.to(torch.float32)
            if self.do_normalize:
                # Fused like the torchvision backend: (x - mean / r) / (std / r), not (x * r - mean) / std,
                # which rounds differently in float32.
                scale = self.rescale_factor if self.do_rescale else 1.0
                x = (x - self.mean * (1.0 / scale)) / (self.std * (1.0 / scale))
            elif self.do_rescale:
                x = x * self.rescale_factor
            out.append(x)
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
