"""Draw what the grounded verifiers see (docs/verifier-inputs.png), from one image of a rendered demo world.

`python scripts/draw_verifier_inputs.py [--out docs/verifier-inputs.png]`. Left to right: the image with
the phrase's instances outlined; the MV input for one of them (its zoomed-in and zoomed-out crops at 48 px,
each then its mask channel); the EV input for the pair with one instance left unboxed (the image at the
scorer's 192 px, then the box channel), and the objects the shipped region EV finds outside the boxes
(grounded/region_ev.py), each of which it crops as MV does. Each input is the exact tensor the scorers read
(grounded/backend.py), shown enlarged.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from conceptengine.engine import rle
from conceptengine.sim.render import STYLES
from conceptengine.sim.world import build_world
from conceptengine.verifiers.grounded.backend import boxed_view, mask_views
from conceptengine.verifiers.grounded.crops import CROP_SIZE
from conceptengine.verifiers.grounded.ev_model import EV_IMAGE_SIZE
from conceptengine.verifiers.grounded.region_ev import RegionEVModel

PANEL = 192
REPO = Path(__file__).resolve().parents[1]
SHIPPED_EV = REPO / "conceptengine" / "assets" / "verifier-grounded" / "ev"


def _panel(image: Image.Image, title: str) -> Image.Image:
    out = Image.new("RGB", (PANEL, PANEL + 18), "white")
    out.paste(image.convert("RGB").resize((PANEL, PANEL), Image.NEAREST), (0, 18))
    ImageDraw.Draw(out).text((4, 3), title, fill="black")
    return out


def _channels(view: Image.Image) -> tuple[Image.Image, Image.Image]:
    rgba = np.asarray(view)
    return Image.fromarray(rgba[..., :3]), Image.fromarray(rgba[..., 3]).convert("RGB")


def _pieces(view: Image.Image) -> Image.Image:
    """The unboxed objects the shipped region EV segments in `view` (RGBA: image and box channel), each in
    its own colour over the dimmed image."""
    model = RegionEVModel.from_pretrained(SHIPPED_EV).eval()
    pixels = torch.from_numpy(np.asarray(view, dtype=np.float32).transpose(2, 0, 1) / 255.0)[None]
    found, _ = model.find_objects(pixels[:, :3], pixels[:, 3] > model.config.box_threshold)[0]
    out = np.asarray(view)[..., :3] // 3
    palette = [(255, 80, 80), (80, 255, 80), (80, 160, 255), (255, 220, 60), (255, 80, 255), (60, 255, 255)]
    for k, piece in enumerate(found):
        out[piece] = palette[k % len(palette)]
    return Image.fromarray(out)


def _pick(world) -> tuple[str, str, list[dict]]:  # type: ignore[no-untyped-def]
    """An image and a leaf concept it shows at least twice: (media_id, leaf, its instances)."""
    for media_id in world.media_ids("train"):
        instances = world.record(media_id)["instances"]
        for leaf in sorted({i["leaf"] for i in instances}):
            same = [i for i in instances if i["leaf"] == leaf]
            if len(same) >= 2:
                return media_id, leaf, same
    raise RuntimeError("no image of the world shows one concept twice; render more images")


def draw(out: Path, seed: int = 7) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        world = build_world(Path(tmp) / "world", 12, 0, seed=seed, image_size=192, style=STYLES["demo"])
        media_id, leaf, instances = _pick(world)
        image = np.asarray(Image.open(world.image_path(media_id)).convert("RGB"))
    h, w = image.shape[:2]
    boxes = [rle.box_xyxy(i["rle"], h, w) for i in instances]
    shown = Image.fromarray(image)
    pen = ImageDraw.Draw(shown)
    for box in boxes:
        pen.rectangle(box, outline=(255, 255, 0))
    zoomed_in, zoomed_out = mask_views(image, instances[0]["rle"], boxes[0], CROP_SIZE)
    in_rgb, in_mask = _channels(zoomed_in)
    out_rgb, out_mask = _channels(zoomed_out)
    ev_view = boxed_view(image, boxes[1:], EV_IMAGE_SIZE)  # the first one left unboxed
    ev_rgb, ev_boxes = _channels(ev_view)
    panels = [
        _panel(shown, f'image, "{leaf}" outlined'),
        _panel(in_rgb, f"MV: zoomed in ({CROP_SIZE} px)"),
        _panel(in_mask, "MV: its mask channel"),
        _panel(out_rgb, f"MV: zoomed out ({CROP_SIZE} px)"),
        _panel(out_mask, "MV: its mask channel"),
        _panel(ev_rgb, f"EV: image ({EV_IMAGE_SIZE} px)"),
        _panel(ev_boxes, "EV: boxes (one missed)"),
        _panel(_pieces(ev_view), "EV: objects outside the boxes"),
    ]
    sheet = Image.new("RGB", (len(panels) * (PANEL + 6), PANEL + 18), "white")
    for k, p in enumerate(panels):
        sheet.paste(p, (k * (PANEL + 6), 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "docs" / "verifier-inputs.png"))
    ap.add_argument("--seed", type=int, default=7, help="the rendered world's seed")
    args = ap.parse_args(argv)
    print(draw(Path(args.out), args.seed))


if __name__ == "__main__":
    main()
