"""transformers' own Sam3Processor on inputs the test hands over; run by a Python that has torchvision.

    python sam3_processor_reference.py PROCESSOR_DIR IN.npz OUT.npz

IN.npz holds images (image_0, image_1, ...), the phrases (`texts`) and one image's raw detector outputs
(pred_logits, presence_logits, pred_boxes, pred_masks, with `height`, `width`, `threshold`); OUT.npz gets
what Sam3Processor makes of them. It imports nothing of the engine: PyPI's torchvision does not import next
to the CPU torch the project installs, so this may run in a second environment (.ci/reference-python).
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import torch
from transformers import Sam3Processor


def main(processor_dir: str, inputs: str, outputs: str) -> None:
    data = np.load(inputs)
    proc = Sam3Processor.from_pretrained(processor_dir)
    texts = [str(t) for t in data["texts"]]
    out: dict[str, np.ndarray] = {}
    images = sorted((k for k in data.files if k.startswith("image_")), key=lambda k: int(k.split("_")[1]))
    for key in images:
        enc = proc(images=data[key], text=texts, return_tensors="pt")
        i = key.split("_")[1]
        out[f"pixel_values_{i}"] = enc["pixel_values"].numpy()
        out[f"input_ids_{i}"] = enc["input_ids"].numpy()
        out[f"attention_mask_{i}"] = enc["attention_mask"].numpy()

    # One image, one NP per batch row: what post_process_instance_segmentation keeps of each NP's queries.
    raw = SimpleNamespace(
        **{k: torch.from_numpy(data[k]) for k in ("pred_logits", "pred_boxes", "pred_masks")}
    )
    raw.presence_logits = torch.from_numpy(data["presence_logits"])
    size = (int(data["height"]), int(data["width"]))
    results = proc.image_processor.post_process_instance_segmentation(
        raw, threshold=float(data["threshold"]), mask_threshold=0.5, target_sizes=[size] * len(texts)
    )
    for n, result in enumerate(results):
        out[f"scores_{n}"] = result["scores"].numpy()
        out[f"masks_{n}"] = result["masks"].numpy().astype(bool)
    np.savez(outputs, **out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
