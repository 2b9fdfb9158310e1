"""The engine's proposal stage on the FULL-SIZE SAM 3 architecture (`Sam3Config()`, ~840M parameters).

Every other model test uses the tiny checkpoint of `conceptengine.model.tiny`; this one checks that the
loading and proposal code also handles the real architecture at its real input size (1008 px, 288 px masks,
200 queries, 32 ViT layers). No hub: the weights are random and the tokenizer is trained offline like the
tiny one's, laid out as CLIP's (49408 ids, <|startoftext|> = 49406, <|endoftext|> = 49407) so that
`Sam3Config()` is used unchanged. The masks are meaningless; the test checks structure, size and cost.

Measured times and peak memory per phase are printed (`pytest -s` shows them).
"""

from __future__ import annotations

import gc
import resource
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image, ImageDraw
from tokenizers import pre_tokenizers
from transformers import CLIPTokenizer, Sam3Config, Sam3Model

from conceptengine.engine import ids, rle
from conceptengine.engine.stage import StageConfig
from conceptengine.engine.tables import PAIRS, PROPOSALS
from conceptengine.model.propose_masks import ProposeMasks
from conceptengine.model.tiny import BOS, EOS, MAX_TEXT_LEN, learn_bpe_merges, save_processor_files

pytestmark = pytest.mark.slow

IMAGE_SIZE = 1008  # SAM 3's input size; processor_config derives the 288 px mask size from it
NOUN_PHRASES = ["red square", "blue circle"]
HEIGHT, WIDTH = 768, 1024


def _full_vocab_clip_tokenizer(texts: list[str], vocab_size: int) -> CLIPTokenizer:
    """tiny.py's byte-level BPE, laid out like CLIP's vocabulary: bytes, word-final bytes, merges, unused
    fillers up to `vocab_size - 2`, then BOS and EOS as the last two ids (what `Sam3Config()` expects)."""
    merges = learn_bpe_merges(texts)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for t in alphabet + [ch + "</w>" for ch in alphabet] + [a + b for a, b in merges]:
        vocab.setdefault(t, len(vocab))
    for i in range(vocab_size - 2 - len(vocab)):
        vocab[f"<|unused{i}|>"] = len(vocab)
    vocab[BOS], vocab[EOS] = vocab_size - 2, vocab_size - 1
    assert len(vocab) == vocab_size
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TEXT_LEN)


def _build_full_size_checkpoint(out: Path) -> tuple[Sam3Config, int]:
    config = Sam3Config()
    tc = config.text_config
    tokenizer = _full_vocab_clip_tokenizer(NOUN_PHRASES + ["a", "the", "of"], tc.vocab_size)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (tc.bos_token_id, tc.eos_token_id)
    ids_ = tokenizer(NOUN_PHRASES, padding="max_length", max_length=MAX_TEXT_LEN)["input_ids"]
    assert max(max(r) for r in ids_) < tc.vocab_size and all(len(r) == MAX_TEXT_LEN for r in ids_)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        model = Sam3Model(config).eval()  # float32: the dtype the stage runs in on CPU
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    del model
    gc.collect()
    save_processor_files(out, tokenizer, config, IMAGE_SIZE)
    return config, n_params


def _rss_gib() -> tuple[float, float]:
    """(current RSS, peak RSS since the last reset) in GiB; peak is the process's lifetime peak
    (getrusage) where the kernel's high-water mark cannot be read."""
    try:
        status = dict(
            line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line
        )
        rss, hwm = (int(status[k].split()[0]) / 2**20 for k in ("VmRSS", "VmHWM"))
        return rss, hwm
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        return peak, peak


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS
    except OSError:
        pass


@contextmanager
def _phase(name: str, report: list[str]):
    gc.collect()
    _reset_peak()
    t0 = time.perf_counter()
    yield
    dt = time.perf_counter() - t0
    rss, peak = _rss_gib()
    report.append(f"{name:<22s} {dt:7.1f} s   peak RSS {peak:5.2f} GiB   RSS after {rss:5.2f} GiB")


def _image(path: Path) -> tuple[str, str]:
    img = Image.new("RGB", (WIDTH, HEIGHT), (235, 230, 220))
    draw = ImageDraw.Draw(img)
    draw.rectangle((100, 120, 420, 440), fill=(200, 30, 30))
    draw.ellipse((560, 260, 900, 600), fill=(30, 60, 200))
    noise = np.random.default_rng(0).integers(0, 24, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(np.asarray(img) - noise).save(path)
    return str(path), ids.media_id_for_bytes(path.read_bytes())


@pytest.fixture
def checkpoint_dir(tmp_path):
    """The ~3.1 GiB checkpoint is removed when the test ends: pytest keeps the last runs' tmp_path dirs."""
    path = tmp_path / "sam3-full-random"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(900)
def test_propose_masks_runs_full_size_sam3_on_cpu(tmp_path, checkpoint_dir):
    report: list[str] = []
    ckpt = checkpoint_dir
    with _phase("build + save", report):
        config, n_params = _build_full_size_checkpoint(ckpt)
    disk_gib = sum(f.stat().st_size for f in ckpt.iterdir()) / 2**30
    report.append(f"checkpoint on disk     {disk_gib:.2f} GiB ({n_params / 1e6:.1f}M parameters)")

    uri, media_id = _image(tmp_path / "scene.png")
    batch = pa.Table.from_pylist(
        [
            {
                "pair_id": ids.pair_id(media_id, np_),
                "media_id": media_id,
                "uri": uri,
                "width": WIDTH,
                "height": HEIGHT,
                "noun_phrase": np_,
                "node_id": None,
                "origin": "ontology",
                "round": 1,
            }
            for np_ in NOUN_PHRASES
        ],
        schema=PAIRS,
    )
    # Threshold 0 so that the mask decoder, upsampling and RLE run too, whatever the random scores are.
    stage = ProposeMasks(StageConfig(), model_path=str(ckpt), score_threshold=0.0, max_masks=3)
    with _phase("load (stage.setup)", report):
        stage.setup()
    model = stage.detector.model
    # safetensors weights of the checkpoint's dtype stay memory-mapped: setup reads almost nothing, and the
    # first forward would page 3 GiB in. Touch every weight here so the forward's time is compute only.
    with _phase("page weights in", report), torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            t.sum()
    vision_t: list[float] = []
    pre = model.vision_encoder.register_forward_pre_hook(lambda *_: vision_t.append(time.perf_counter()))
    post = model.vision_encoder.register_forward_hook(lambda *_: vision_t.append(time.perf_counter()))
    with _phase("forward (1 img, 2 NPs)", report):
        t0 = time.perf_counter()
        out = stage(batch)
        total = time.perf_counter() - t0
    pre.remove()
    post.remove()
    assert len(vision_t) == 2  # the image is encoded once for both NPs
    vision_s = vision_t[1] - vision_t[0]
    report.append(f"  of which vision      {vision_s:7.1f} s; text+DETR+masks+RLE {total - vision_s:.1f} s")
    print(f"\nfull-size SAM 3 on CPU ({torch.get_num_threads()} threads):\n  " + "\n  ".join(report))
    # The model that ran is the full-size architecture, in float32.
    full = Sam3Config()
    ran = model.config
    assert sum(p.numel() for p in model.parameters()) == n_params > 800_000_000
    assert next(model.parameters()).dtype == torch.float32
    vb, fb = ran.vision_config.backbone_config, full.vision_config.backbone_config
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size"):
        assert getattr(vb, key) == getattr(fb, key), key
    assert vb.hidden_size == config.vision_config.backbone_config.hidden_size == 1024
    assert ran.text_config.vocab_size == full.text_config.vocab_size
    assert ran.detr_decoder_config.num_queries == full.detr_decoder_config.num_queries
    assert stage.detector.pixel_spec.height == stage.detector.pixel_spec.width == IMAGE_SIZE

    # One row per pair, in order, with the stage's schema and no errors.
    assert out.schema.equals(PROPOSALS)
    assert out.column_names == list(stage.output_columns)
    assert out.column("pair_id").to_pylist() == batch.column("pair_id").to_pylist()
    for row in out.to_pylist():
        assert row["error"] is None, row["error"]
        assert row["model_version"] == stage.detector.version
        assert 0.0 <= row["presence"] <= 1.0
        assert 1 <= len(row["masks"]) <= 3
        scores = [m["score"] for m in row["masks"]]
        assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
        for k, m in enumerate(row["masks"]):
            assert m["instance_id"] == ids.instance_id(row["pair_id"], k)
            mask = rle.decode(m["rle"], HEIGHT, WIDTH)
            assert mask.shape == (HEIGHT, WIDTH) and mask.any()
            x0, y0, x1, y1 = m["box_xyxy"]
            assert 0.0 <= x0 <= x1 <= WIDTH and 0.0 <= y0 <= y1 <= HEIGHT
