"""Point prompts for the correction page: `transformers.Sam3TrackerModel`, SAM 3's interactive half.

A reviewer clicks on a missed instance (positive clicks) or on what a mask wrongly covers (negative
clicks); every click re-runs the tracker's prompt encoder and mask decoder on the image's embeddings,
which are computed once per image and kept in a small LRU, so a click costs milliseconds.

Loading is the one used for `facebook/sam3` (`Sam3TrackerModel.from_pretrained(path_or_id)`). A run
whose SAM 3 is an image-only `Sam3Model` checkpoint (the demo's) has no tracker weights, so
`build_tracker_checkpoint` saves a `Sam3TrackerModel` that shares that checkpoint's vision encoder (as
SAM 3's tracker shares the detector's backbone) with a freshly initialised prompt encoder and mask
decoder. Its masks are therefore only as good as those weights: untrained, they are blobs around the
clicks, not object outlines. The engine never fakes them; with `facebook/sam3` they are real.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Sam3Model, Sam3TrackerConfig, Sam3TrackerModel, Sam3TrackerProcessor
from transformers.utils import cached_file

from conceptengine.engine.checkpoints import local_checkpoint
from conceptengine.model.processing import Sam3PixelProcessor, torchvision_usable
from conceptengine.review.web.run import ReviewRun

log = logging.getLogger(__name__)
TRACKER_DIR = "models/sam3-tracker"
# facebook/sam3 is a `sam3_video` checkpoint: the tracker under `tracker_model.`, its own vision neck
# `tracker_neck.`, and the backbone shared with the detector. transformers 5.23 declares these renames for
# sam3_tracker but leaves the `tracker_model.` prefix in place when loading such a checkpoint (checked on
# a tiny sam3_video checkpoint: every prompt-encoder and mask-decoder weight came up missing), so they are
# passed explicitly. On a plain `sam3_tracker` checkpoint none of them matches.
SAM3_VIDEO_KEYS = {
    r"^tracker_model\.(.+)": r"\1",
    r"^detector_model\.vision_encoder\.backbone\.": "vision_encoder.backbone.",
    r"^tracker_neck\.": "vision_encoder.neck.",
}
_EMBED_CACHE = 16  # images; a reviewer works one image at a time, prefetch adds the next


def _model_type(path: str) -> str | None:
    cfg = Path(path, "config.json")
    return json.loads(cfg.read_text()).get("model_type") if cfg.exists() else None


def build_tracker_checkpoint(sam3_dir: str, out_dir: str, seed: int = 0) -> str:
    """Save a Sam3TrackerModel (+ processor config) built on the vision encoder of the Sam3Model at `sam3_dir`."""

    src = Sam3Model.from_pretrained(sam3_dir)
    vision = src.config.vision_config
    hidden = vision.fpn_hidden_size
    image_size = vision.backbone_config.image_size
    heads = max(1, min(8, hidden // 32))
    config = Sam3TrackerConfig(
        vision_config=vision.to_dict(),
        prompt_encoder_config={
            "hidden_size": hidden,
            "image_size": image_size,
            "patch_size": vision.backbone_config.patch_size,  # the token grid the prompt encoder matches
        },
        mask_decoder_config={
            "hidden_size": hidden,
            "num_attention_heads": heads,
            "mlp_dim": 8 * hidden,
            "iou_head_hidden_dim": hidden,
        },
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam3TrackerModel(config).eval()
    model.vision_encoder.load_state_dict(src.vision_encoder.state_dict(), strict=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    proc = json.loads(Path(sam3_dir, "processor_config.json").read_text())
    tracker_proc = {
        "image_processor": proc["image_processor"],
        "point_pad_value": proc.get("point_pad_value", -10),
        "processor_class": "Sam3TrackerProcessor",
        "target_size": image_size,
    }
    (out / "processor_config.json").write_text(json.dumps(tracker_proc, indent=2) + "\n")
    return str(out)


class TrackerUnavailable(RuntimeError):
    """The tracker could not be built or loaded; the message names the checkpoint and the cause."""


class _Pixels:
    """Image -> pixel_values and the coordinate scale, via Sam3TrackerProcessor when torchvision imports."""

    def __init__(self, path: str) -> None:
        self.reference = None
        if torchvision_usable():
            self.reference = Sam3TrackerProcessor.from_pretrained(path)
            self.target = int(self.reference.target_size)
            return
        cfg = json.loads(Path(cached_file(path, "processor_config.json")).read_text())
        self.fallback = Sam3PixelProcessor(cfg.get("image_processor", {}))
        self.target = int(cfg.get("target_size") or self.fallback.size[0])

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if self.reference is not None:
            return self.reference(images=image, return_tensors="pt")["pixel_values"]
        return self.fallback(image)["pixel_values"]


class PointSegmenter:
    """One loaded tracker. Not thread-safe by itself; TrackerService serialises calls."""

    def __init__(self, path: str, device: str = "cpu") -> None:

        self.path = path
        self.device = torch.device(device)
        model, info = Sam3TrackerModel.from_pretrained(
            path, key_mapping=SAM3_VIDEO_KEYS, output_loading_info=True
        )
        if info["missing_keys"]:
            # e.g. an image-only Sam3Model checkpoint: loading would silently give an untrained tracker.
            missing = sorted(info["missing_keys"])
            raise ValueError(
                f"{path} holds no Sam3Tracker weights ({len(missing)} missing, e.g. {missing[0]}); "
                "pass a sam3_tracker or sam3_video checkpoint such as facebook/sam3"
            )
        self.model = model.to(self.device).eval()
        self.pixels = _Pixels(path)
        self._embeddings: OrderedDict[str, list[torch.Tensor]] = OrderedDict()

    @torch.inference_mode()
    def _embed(self, key: str, image: np.ndarray) -> list[torch.Tensor]:
        if key in self._embeddings:
            self._embeddings.move_to_end(key)
            return self._embeddings[key]
        emb = self.model.get_image_embeddings(self.pixels(image).to(self.device))
        self._embeddings[key] = emb
        while len(self._embeddings) > _EMBED_CACHE:
            self._embeddings.popitem(last=False)
        return emb

    @torch.inference_mode()
    def segment(
        self,
        key: str,
        image: np.ndarray,
        points: Sequence[Sequence[float]],
        labels: Sequence[int],
        box_xyxy: Sequence[float] | None = None,
    ) -> tuple[np.ndarray, float]:
        """(bool mask at the image's size, predicted IoU) for one object prompted by clicks (+ a box)."""
        h, w = image.shape[:2]
        k = torch.tensor([self.pixels.target / w, self.pixels.target / h])
        pts = torch.tensor(points, dtype=torch.float32) * k
        kwargs: dict[str, Any] = {
            "input_points": pts.view(1, 1, -1, 2).to(self.device),
            "input_labels": torch.tensor(labels, dtype=torch.int64).view(1, 1, -1).to(self.device),
        }
        if box_xyxy is not None:
            box = torch.tensor(box_xyxy, dtype=torch.float32).view(2, 2) * k
            kwargs["input_boxes"] = box.view(1, 1, 4).to(self.device)
        # SAM's convention: one click is ambiguous (part or whole?), so take the best of three masks;
        # more clicks disambiguate, so ask for one.
        multi = len(points) == 1 and box_xyxy is None
        out = self.model(image_embeddings=self._embed(key, image), multimask_output=multi, **kwargs)
        scores = out.iou_scores[0, 0]
        best = int(scores.argmax())
        logits = out.pred_masks[0, 0, best][None, None].float()
        mask = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0, 0] > 0
        return mask.cpu().numpy(), float(scores[best])


class TrackerService:
    """Loads the tracker on first use (or in the background at server start), one call at a time."""

    def __init__(self, path: str | None, device: str = "cpu", build_from: str | None = None) -> None:
        self.path, self.device, self.build_from = path, device, build_from
        self._segmenter: PointSegmenter | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_run(cls, run: ReviewRun, device: str = "cpu") -> TrackerService:
        """The run's SAM 3 if it carries tracker weights (`facebook/sam3`), else one built beside the run."""
        sam3 = local_checkpoint(run.sam3_path)
        if _model_type(sam3) == "sam3":  # image-only detector checkpoint: no tracker weights inside
            return cls(run.store.workdir(TRACKER_DIR), device, build_from=sam3)
        return cls(sam3, device)

    def load(self) -> PointSegmenter:
        with self._lock:
            return self._load_locked()

    def _load_locked(self) -> PointSegmenter:
        if self._segmenter is not None:
            return self._segmenter
        if self.path is None:
            raise TrackerUnavailable("tracker: this server was started without a SAM 3 tracker")
        try:
            if self.build_from and not Path(self.path, "config.json").exists():
                build_tracker_checkpoint(self.build_from, self.path)
            self._segmenter = PointSegmenter(self.path, self.device)
        except (OSError, ValueError, KeyError) as exc:
            source = self.build_from or self.path
            raise TrackerUnavailable(
                f"tracker: cannot load a Sam3TrackerModel from {source} ({type(exc).__name__}: {exc}); "
                "restart the server with --tracker PATH"
            ) from exc
        return self._segmenter

    def warm_up(self) -> threading.Thread:
        """Load in a background thread so the first click does not wait for the weights."""

        def _run() -> None:
            try:
                self.load()
            except TrackerUnavailable as exc:  # the first segment request answers 503 with the same text
                log.warning("%s", exc)

        thread = threading.Thread(target=_run, name="tracker-warm-up", daemon=True)
        thread.start()
        return thread

    def segment(
        self, key: str, image: np.ndarray, points: list, labels: list[int], box: list | None
    ) -> tuple[np.ndarray, float]:
        with self._lock:
            return self._load_locked().segment(key, image, points, labels, box)
