"""The region EV scorer: segment every object nobody boxed, then ask the MV scorer about each one.

EV asks whether every instance of the phrase has its box. The peak-and-judge EV (ev_model.py) crops its
candidates around grid cells and judges them from RGB and a foreground map; its judge names 49% of leaf
shapes, where the MV scorer, which sees its object's own mask, tells them apart at 0.93 AUC. So this scorer
turns each unboxed object into what MV reads:

1. the finder (the EV detector's layers, trained by ev_train as ever) says per pixel whether it is on an
   object (`foreground`, at stride 2) and per grid cell where objects are centred (`missed`, `offset`), all
   with no box shown, so it sees every object;
2. the foreground minus the proposed boxes is split into objects by a marker watershed (scikit-image) over
   its distance transform, one marker per centre the finder found, and one more per region no centre fell
   in (touching objects stay apart; a concave object keeps one piece);
3. each piece of at least `min_pixels` is cropped as MV crops a mask (its two views, crops.py) and the MV
   scorer's slot heads say how well it matches the phrase: P(piece) = prod over slots of P(an accepted
   value). Mask quality is left out: a piece is a segment the finder made, not a proposal to grade.
4. P(Accept) = 1 - max over pieces of P(piece) * objectness ** `objectness_power` (objectness: the piece's
   mean foreground probability; the power is chosen on the training world by scripts/compose_region_ev.py):
   one clear missed instance is enough to refuse, and many faint matches (a product would add them up) are
   not. The slot heads were trained on MV's crops, where
   a match's probability means something else, so the likeliest piece's logit is Platt-scaled (`scale`,
   `bias`, fitted on the training world's EV verdicts by scripts/compose_region_ev.py): logit P(Reject) =
   scale * logit P(likeliest piece) + bias.

On the bench's test world (benchmarks/bench_verifier_grounding.py) this took the shipped EV from 0.797 to 0.90
ROC AUC with the finder and MV weights unchanged; pieces from the true per-object masks would give 0.94,
so the finder's segmentation is what is left to gain. The pieces are found outside autograd (numpy); the
judge is differentiable in the verdict, so `forward` also fine-tunes it on human EV verdicts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from skimage.segmentation import watershed
from torch import nn
from torch.nn import functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from conceptengine.verifiers.choices import EV
from conceptengine.verifiers.grounded.crops import object_views
from conceptengine.verifiers.grounded.ev_model import (
    EV_IMAGE_SIZE,
    ForegroundHead,
    GroundedEVModel,
    detector_features,
    detector_layers,
    neighbourhood_max,
)
from conceptengine.verifiers.grounded.ev_train import EVData, pixels_of
from conceptengine.verifiers.grounded.model import FLOOR, GroundedMVConfig, GroundedMVModel, log_slot_match
from conceptengine.verifiers.grounded.phrases import MINILM
from conceptengine.verifiers.grounded.train import verdict_loss

EDGE = 1e-4  # the likeliest piece's P stays below 1 - EDGE: its logit is finite


class RegionEVConfig(PretrainedConfig):
    model_type = "conceptengine_grounded_ev_regions"

    def __init__(
        self,
        judge: dict | None = None,
        detector_channels: list[int] | None = None,
        context_layers: int = 2,
        image_size: int = EV_IMAGE_SIZE,
        foreground_threshold: float = 0.6,
        centre_threshold: float = 0.2,
        min_pixels: int = 12,
        box_threshold: float = 0.5,
        objectness_power: float = 0.0,
        scale: float = 1.0,
        bias: float = 0.0,
        text_model: str = MINILM,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # the MV scorer's config (GroundedMVConfig.to_dict()): the judge is an MV scorer, weights and all
        self.judge = dict(judge or GroundedMVConfig().to_dict())
        self.detector_channels = list(detector_channels or [16, 32, 64])
        self.context_layers = context_layers
        self.image_size = image_size
        self.foreground_threshold = foreground_threshold  # P(object) above which a pixel is foreground
        self.centre_threshold = centre_threshold  # P(centre) above which a local peak seeds an object
        self.min_pixels = min_pixels  # smaller pieces are specks between boxes, not objects
        self.box_threshold = box_threshold  # alpha above which a pixel is inside a proposed box
        # A piece counts as P(match) * objectness ** objectness_power, objectness its mean foreground
        # probability: a faint sliver the finder half believes in is less likely a missed object (0: off).
        self.objectness_power = objectness_power
        self.scale, self.bias = scale, bias  # Platt scaling of the likeliest piece's logit (1, 0: none)
        self.text_model = text_model
        self.choices = list(EV.names)

    @property
    def stride(self) -> int:
        return 2 ** len(self.detector_channels)

    @property
    def grid(self) -> int:
        return self.image_size // self.stride

    @property
    def slots(self) -> list[list]:
        return self.judge.get("slots", [])


@dataclass
class RegionEVOutput(ModelOutput):
    accept_logits: torch.Tensor | None = None  # (B,)
    other_logits: torch.Tensor | None = None  # (B, len(EV) - 1)
    pieces: list[np.ndarray] | None = None  # per image (n, S, S) bool: the unboxed objects it judged
    piece_probs: list[torch.Tensor] | None = None  # per image (n,): P(the piece is an instance of the phrase)
    objectness: list[np.ndarray] | None = None  # per image (n,): each piece's mean foreground probability


class RegionEVModel(PreTrainedModel):
    config_class = RegionEVConfig
    main_input_name = "pixel_values"

    def __init__(self, config: RegionEVConfig):
        super().__init__(config)
        det = config.detector_channels[-1]
        # The same layers, under the same names, as GroundedEVModel's finder: `from_parts` copies them over.
        self.detector = detector_layers(config.detector_channels, config.context_layers)
        self.missed = nn.Conv2d(det, 1, 1)
        self.offset = nn.Conv2d(det, 2, 1)
        self.foreground = ForegroundHead(config.detector_channels[0], det)
        self.judge = GroundedMVModel(GroundedMVConfig(**config.judge))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        pass  # torch's own initialisation, or the parts' trained weights (from_parts)

    @classmethod
    def from_parts(cls, finder: GroundedEVModel, judge: GroundedMVModel, **settings) -> RegionEVModel:
        """A region EV from a trained peak-and-judge EV (its detector, centre, offset and foreground layers:
        one trained with `silhouette` and `centre_offsets`) and a trained MV scorer (the judge); `settings`:
        RegionEVConfig's thresholds and scaling."""
        fc = finder.config
        if not (fc.silhouette and fc.centre_offsets):
            raise ValueError(
                "the region EV's finder must be an EV scorer trained with silhouette and centre_offsets "
                "(scripts/train_demo_grounded_verifiers.py --ev-silhouette --ev-centre-offsets)"
            )
        config = RegionEVConfig(
            judge=judge.config.to_dict(),
            detector_channels=fc.detector_channels,
            context_layers=fc.context_layers,
            image_size=fc.image_size,
            text_model=judge.config.text_model,
            **settings,
        )
        model = cls(config)
        for name in ("detector", "missed", "offset", "foreground"):
            getattr(model, name).load_state_dict(getattr(finder, name).state_dict())
        model.judge.load_state_dict(judge.state_dict())
        return model.eval()

    @torch.no_grad()
    def find_objects(self, rgb: torch.Tensor, boxed: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image of `rgb` (B, 3, S, S) in [0, 1]: its objects outside `boxed` (B, S, S), (n, S, S) bool,
        and each one's objectness (n,), the mean foreground probability over its pixels."""
        c = self.config
        x, first = detector_features(self.detector, torch.cat([rgb, torch.zeros_like(rgb[:, :1])], dim=1))
        fg = torch.sigmoid(self.foreground(first, x))[:, None]
        fg = F.interpolate(fg, size=rgb.shape[-2:], mode="bilinear", align_corners=False)[:, 0].numpy()
        centres = self._centres(self.missed(x)[:, 0], torch.sigmoid(self.offset(x)))
        out = []
        for b in range(len(rgb)):
            objects = split_objects(
                (fg[b] > c.foreground_threshold) & ~boxed[b].numpy(), centres[b], c.min_pixels
            )
            out.append((objects, np.array([fg[b][m].mean() for m in objects], dtype=np.float32)))
        return out

    def _centres(self, missed: torch.Tensor, within: torch.Tensor) -> list[np.ndarray]:
        """Per image, (n, 2) integer (row, col) pixels where the finder puts an object's centre."""
        c = self.config
        peaks = (missed >= neighbourhood_max(missed)) & (torch.sigmoid(missed) > c.centre_threshold)
        last = c.image_size - 1
        out = []
        for b in range(len(missed)):
            ys, xs = torch.nonzero(peaks[b], as_tuple=True)
            col = ((xs + within[b, 0, ys, xs]) * c.stride).long().clamp(0, last)
            row = ((ys + within[b, 1, ys, xs]) * c.stride).long().clamp(0, last)
            out.append(torch.stack([row, col], dim=1).numpy())
        return out

    def forward(self, pixel_values: torch.Tensor, phrase_embeds: torch.Tensor) -> RegionEVOutput:
        c = self.config
        # An image's pairs mostly show it with the same boxes (none, where SAM 3 proposed no mask): its
        # pieces and their slot values are found once per distinct view, only the phrase's side per pair.
        slot: dict[bytes, int] = {}  # a view's bytes -> its index among the distinct views
        rows: list[int] = []  # the first row of each distinct view
        keys = []
        for b, view in enumerate(pixel_values.detach()):
            digest = hashlib.sha1(view.numpy().tobytes()).digest()
            if digest not in slot:
                slot[digest] = len(rows)
                rows.append(b)
            keys.append(slot[digest])
        distinct = pixel_values[rows]
        rgb = distinct[:, :3]
        found = self.find_objects(rgb, distinct[:, 3] > c.box_threshold)
        images = np.round(rgb.detach().permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
        values = [self.piece_values(images[i], objects) for i, (objects, _) in enumerate(found)]
        likeliest, probs = [], []
        for b, k in enumerate(keys):
            if values[k] is None:
                probs.append(rgb.new_zeros(0))
                likeliest.append(rgb.new_tensor(FLOOR))
                continue
            p = self.piece_probs(values[k], phrase_embeds[b : b + 1])
            probs.append(p)
            likeliest.append(likeliest_piece(p, found[k][1], c.objectness_power))
        top = torch.stack(likeliest).clamp(FLOOR, 1 - EDGE)
        accept = -(c.scale * (torch.log(top) - torch.log1p(-top)) + c.bias)
        others = torch.full((len(keys), len(c.choices) - 1), -1e4, dtype=rgb.dtype)
        others[:, 0] = 0.0  # all of 1 - P(Accept) on "Reject": a missed instance is all it looks for
        return RegionEVOutput(
            accept_logits=accept,
            other_logits=others,
            pieces=[found[k][0] for k in keys],
            piece_probs=probs,
            objectness=[found[k][1] for k in keys],
        )

    def piece_values(self, image: np.ndarray, objects: np.ndarray) -> list[torch.Tensor] | None:
        """Per slot, (n, n_values) logits of which value each piece has, from MV's crops of `image`
        (H, W, 3) uint8 with the piece as the mask; None for no pieces."""
        if len(objects) == 0:
            return None
        judge = self.judge
        views = np.stack([object_views(image, m, _box(m), judge.config.crop_size) for m in objects])
        n, channels, h, w = views.shape
        feats = judge.tower(torch.from_numpy(views).reshape(-1, channels // 2, h, w)).reshape(n, -1)
        return list(judge.values(feats).split(judge.slot_sizes, dim=-1))

    def piece_probs(self, values: list[torch.Tensor], phrase_embed: torch.Tensor) -> torch.Tensor:
        """(n,) P(each piece is an instance of the phrase), from its slot values and what the phrase needs."""
        needs = torch.sigmoid(self.judge.needs(phrase_embed)).split(self.judge.slot_sizes, dim=-1)
        return log_slot_match(values, needs).exp().clamp(FLOOR, 1.0)

    @torch.no_grad()
    def choice_probs(self, pixel_values: torch.Tensor, phrase_embeds: torch.Tensor) -> torch.Tensor:
        """(B, len(EV)) probabilities in choices.EV order (Accept first)."""
        out = self(pixel_values, phrase_embeds)
        accept = torch.sigmoid(out.accept_logits)[:, None]
        return torch.cat([accept, (1 - accept) * out.other_logits.softmax(-1)], dim=-1)


def likeliest_piece(probs: torch.Tensor, objectness: np.ndarray, power: float) -> torch.Tensor:
    """max over pieces of P(match) * objectness ** power: the piece most likely a missed instance."""
    if power == 0:
        return probs.max()
    return (probs * torch.from_numpy(objectness).to(probs.dtype) ** power).max()


def split_objects(free: np.ndarray, centres: np.ndarray, min_pixels: int) -> np.ndarray:
    """(n, H, W) bool: `free` (H, W) foreground split into objects by a watershed over its distance
    transform, seeded at `centres` (n, 2: row, col) that fall on it and at the deepest pixel of every
    region none fell in; pieces under `min_pixels` dropped."""
    regions, n_regions = ndimage.label(free)
    if n_regions == 0:
        return np.zeros((0, *free.shape), dtype=bool)
    depth = ndimage.distance_transform_edt(free)
    markers = np.zeros(free.shape, dtype=np.int32)
    on = [(r, c) for r, c in centres if free[r, c]]
    for k, (r, c) in enumerate(on, start=1):
        markers[r, c] = k
    seeded = set(np.unique(regions[markers > 0]).tolist())
    unseeded = [i for i in range(1, n_regions + 1) if i not in seeded]
    if unseeded:
        deepest = ndimage.maximum_position(depth, regions, unseeded)
        for k, (r, c) in enumerate(deepest, start=len(on) + 1):
            markers[r, c] = k
    labels = watershed(-depth, markers, mask=free)
    pieces = [labels == k for k in range(1, int(labels.max()) + 1)]
    kept = [p for p in pieces if p.sum() >= min_pixels]
    return np.stack(kept) if kept else np.zeros((0, *free.shape), dtype=bool)


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def loss_on(model: RegionEVModel, data: EVData, idx: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    """The verdict's loss on a batch of EV examples (a run's human verdicts), through the judge only: the
    finder's pieces are found outside autograd. Batch norm keeps its running statistics (eval mode), so
    what the finder and the judge learned of the pictures stays and the verdicts tune weights alone."""
    model.eval()
    out = model(pixels_of(data, idx), embeds[idx])
    loss = verdict_loss(out.accept_logits, out.other_logits, data.choices[idx])
    # a batch with no unboxed object anywhere has nothing to train: a zero with a graph, not an error
    return loss + 0.0 * sum(p.sum() for p in model.judge.needs.parameters())


def platt_fit(piece_logits: torch.Tensor, accepted: torch.Tensor, steps: int = 200) -> tuple[float, float]:
    """(scale, bias) such that sigmoid(-(scale * piece_logits + bias)) fits P(Accept) to `accepted` (0/1)
    by maximum likelihood: `piece_logits` are the likeliest pieces' logits of an unscaled model
    (minus its accept logits)."""
    params = torch.tensor([1.0, 0.0], requires_grad=True)
    opt = torch.optim.LBFGS([params], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(-(params[0] * piece_logits + params[1]), accepted.float())
        loss.backward()
        return loss

    opt.step(closure)
    return float(params[0].detach()), float(params[1].detach())
