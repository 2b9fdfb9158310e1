"""Build the demo's region EV (conceptengine/assets/verifier-grounded/ev/) from two trained scorers.

`python scripts/compose_region_ev.py --finder EV_DIR --judge MV_DIR` (defaults: the shipped MV as judge). The
finder is a peak-and-judge EV trained with `--ev-silhouette --ev-centre-offsets` by
scripts/train_demo_grounded_verifiers.py (its detector, centre, offset and foreground layers are kept; its
own judge is not); the judge is a trained MV scorer. Nothing is trained here: the region EV
(verifiers/grounded/region_ev.py) is those weights and a segmentation step between them.

On EV examples of the training script's training world (seed 20251, the first `--fit-images` images) it
chooses how much a piece's objectness counts (`objectness_power`, by ROC AUC) and Platt-scales the likeliest
piece's logit: the MV heads' match probabilities are not EV's.

With `--score` (default on) it also renders the training script's test world (seed 20252, the demo's look) and
writes metrics.json beside the checkpoint: agreement with the error-free simulated reviewers on the world's
EV examples (the oracle's all / some / none boxed), for the region EV and for the finder as an EV itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "conceptengine" / "assets" / "verifier-grounded"
# scripts/train_demo_grounded_verifiers.py's training and test worlds
WORLD_SEED, TEST_SEED, TEST_IMAGES = 20251, 20252, 200
# RegionEVConfig.objectness_power values tried on the training world (0: a piece counts by its match alone)
OBJECTNESS_POWERS = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--finder", required=True, help="a trained EV scorer with silhouette and centre offsets")
    ap.add_argument("--judge", default=str(ASSETS / "mv"), help="a trained MV scorer")
    ap.add_argument("--out", default=str(ASSETS / "ev"))
    ap.add_argument("--no-score", dest="score", action="store_false", help="skip the test world's metrics")
    ap.add_argument(
        "--fit-images", type=int, default=300, help="training-world images the scaling is fitted on"
    )
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args(argv)


def ev_examples(model, seed: int, images: int, tmp: Path):  # type: ignore[no-untyped-def]
    """(rows, EVData) of a world rendered as the training script renders its worlds."""
    from conceptengine.config import EngineConfig
    from conceptengine.sim.render import STYLES
    from conceptengine.sim.verifier_examples import grounded_ev_examples
    from conceptengine.sim.world import build_world

    sim = EngineConfig().media.sim
    world = build_world(
        tmp / f"world-{seed}", images, 0, seed, sim.image_size,
        style=STYLES[sim.style], shifted_share=sim.shifted_share,
    )  # fmt: skip
    c = model.config
    return grounded_ev_examples(world.root, seed, c.slots, c.image_size, c.grid)


def fit_scaling(model, images: int, tmp: Path) -> dict:  # type: ignore[no-untyped-def]
    """On the training world's EV examples: choose the objectness power (RegionEVConfig.objectness_power)
    with the best ROC AUC, then Platt-scale the likeliest piece's logit."""
    from conceptengine.verifiers.grounded import ev_train
    from conceptengine.verifiers.grounded.model import FLOOR
    from conceptengine.verifiers.grounded.phrases import PhraseEmbedder
    from conceptengine.verifiers.grounded.region_ev import EDGE, likeliest_piece, platt_fit
    from conceptengine.verifiers.train_metrics import auroc

    rows, data = ev_examples(model, WORLD_SEED, images, tmp)
    embeds = PhraseEmbedder(model.config.text_model)(data.phrases)
    pieces = []  # per example: (P(match) per piece, objectness per piece)
    with torch.no_grad():
        for idx in torch.arange(len(data)).split(64):
            out = model(ev_train.pixels_of(data, idx), embeds[idx])
            pieces += list(zip(out.piece_probs, out.objectness, strict=True))
    accepted = torch.tensor([r["choice"] == "Accept" for r in rows])

    def piece_logits(power: float) -> torch.Tensor:
        top = torch.stack([
            likeliest_piece(p, o, power) if len(p) else torch.tensor(FLOOR) for p, o in pieces
        ]).clamp(FLOOR, 1 - EDGE)  # fmt: skip
        return torch.log(top) - torch.log1p(-top)

    aucs = {power: auroc(-piece_logits(power).numpy(), accepted.numpy()) for power in OBJECTNESS_POWERS}
    model.config.objectness_power = max(aucs, key=aucs.get)
    model.config.scale, model.config.bias = platt_fit(piece_logits(model.config.objectness_power), accepted)
    return {"scale": model.config.scale, "bias": model.config.bias,
            "objectness_power": model.config.objectness_power,
            "auc_per_objectness_power": {str(k): round(v, 4) for k, v in aucs.items()},
            "world": {"seed": WORLD_SEED, "images": images}, "examples": len(rows)}  # fmt: skip


def score(models: dict, threads: int, tmp: Path) -> dict:  # type: ignore[type-arg]
    """Agreement with the simulated reviewers on the test world, per model."""
    from conceptengine.training.grounded_finetune import choice_probs
    from conceptengine.verifiers.grounded.phrases import PhraseEmbedder
    from conceptengine.verifiers.train_data import TASKS
    from conceptengine.verifiers.train_metrics import agreement_metrics

    rows, data = ev_examples(models["region"], TEST_SEED, TEST_IMAGES, tmp)
    human = [r["choice"] for r in rows]
    embedder = PhraseEmbedder(models["region"].config.text_model)
    out = {}
    for name, model in models.items():
        t0 = time.perf_counter()
        probs = choice_probs(model, data, embedder)
        out[name] = agreement_metrics(probs, human, TASKS["ev"]) | {
            "ms_per_item": round((time.perf_counter() - t0) / len(rows) * 1000, 1)
        }
    return {"test": out["region"], "finder_as_ev": out["finder"], "threads": threads,
            "world": {"seed": TEST_SEED, "images": TEST_IMAGES,
                      "examples": "oracle: all / some / none boxed"}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    from conceptengine.verifiers.grounded.ev_model import GroundedEVModel
    from conceptengine.verifiers.grounded.model import GroundedMVModel
    from conceptengine.verifiers.grounded.region_ev import RegionEVModel

    finder = GroundedEVModel.from_pretrained(args.finder).eval()
    judge = GroundedMVModel.from_pretrained(args.judge).eval()
    region = RegionEVModel.from_parts(finder, judge)
    metrics: dict = {
        "composed_from": {"finder": Path(args.finder).name, "judge": Path(args.judge).name},
        "note": "RENDERED domain (procedural shapes). Re-create: python scripts/compose_region_ev.py --finder "
        "<EV from scripts/train_demo_grounded_verifiers.py --tasks ev --ev-silhouette --ev-centre-offsets>",
    }
    finder_metrics = Path(args.finder) / "metrics.json"
    if finder_metrics.exists():  # how the finder was trained, for the record
        metrics["finder_training"] = json.loads(finder_metrics.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        metrics["scaling"] = fit_scaling(region, args.fit_images, Path(tmp))
        if args.score:
            metrics |= score({"region": region, "finder": finder}, args.threads, Path(tmp))
    if args.score:
        print(f"region EV AUC {metrics['test']['auroc_p_accept']:.4f}, finder as EV "
              f"{metrics['finder_as_ev']['auroc_p_accept']:.4f}")  # fmt: skip
    out = Path(args.out)
    staged = out.with_name(out.name + ".new")  # the finder may be the folder being replaced
    shutil.rmtree(staged, ignore_errors=True)
    region.save_pretrained(staged)
    (staged / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_plain) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staged.rename(out)
    print(f"region EV -> {out}")
    return 0


def _plain(value):  # type: ignore[no-untyped-def]
    return value.item() if isinstance(value, np.generic) else str(value)


if __name__ == "__main__":
    sys.exit(main())
