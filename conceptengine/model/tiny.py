"""Build a tiny but real SAM 3 checkpoint offline, loadable exactly like `facebook/sam3`.

CI and air-gapped clusters cannot reach a model hub, so tests and the demo use a `transformers.Sam3Model`
with a small config and a CLIP-style BPE tokenizer trained on the ontology's own words. The files written
are the ones `Sam3Model.from_pretrained` and `Sam3Processor.from_pretrained` read, so the loading code the
engine uses for the real checkpoint is exercised unchanged.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
from transformers import CLIPTokenizer, Sam3Config, Sam3Model

from conceptengine.engine.ids import normalize_np
from conceptengine.model import conv_backbone

MAX_TEXT_LEN = 32  # Sam3Processor pads every prompt to 32 tokens; the text encoder's positions must match
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# CLIPTokenizer's own normalizer / pre-tokenizer, so the trained merges apply exactly as they will at load time.
_CLIP_SPLIT = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
# Generic words so that prompts outside the ontology still tokenize into whole words where possible.
_BASE_WORDS = [
    "a",
    "an",
    "the",
    "of",
    "and",
    "with",
    "on",
    "in",
    "object",
    "thing",
    "shape",
    "colour",
    "color",
    "pattern",
    "small",
    "large",
    "big",
]


def _clip_pretokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=EOS, continuing_subword_prefix="", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    return tok


def learn_bpe_merges(texts: list[str], max_merges: int = 2000) -> list[tuple[str, str]]:
    """Classic BPE learning with CLIP's word-end marker and a total order on ties (count, then pair).

    The `tokenizers` trainer breaks ties by hash-map order, so two builds could differ; the tiny checkpoint
    must be byte-identical for a given seed, and at this vocabulary size plain Python is instant.
    """
    pre = _clip_pretokenizer()
    freq: Counter[str] = Counter()
    for text in texts:
        for word, _ in pre.pre_tokenizer.pre_tokenize_str(pre.normalizer.normalize_str(text)):
            freq[word] += 1
    words = {w: list(w[:-1]) + [w[-1] + "</w>"] for w in freq}
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for w, syms in words.items():
            for a, b in pairwise(syms):
                pairs[(a, b)] += freq[w]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for w, syms in words.items():
            i, out = 0, []
            while i < len(syms):
                if i + 1 < len(syms) and (syms[i], syms[i + 1]) == best:
                    out.append(syms[i] + syms[i + 1])
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[w] = out
    return merges


def train_clip_tokenizer(vocabulary: list[str], max_merges: int = 2000) -> CLIPTokenizer:
    """A byte-level BPE in CLIP's format (`</w>` word ends), trained on the given noun phrases.

    Every byte and every byte+`</w>` is in the vocabulary, so any text tokenizes without unknown tokens.
    Ids: specials, bytes, word-final bytes, then merged tokens in merge order.
    """
    texts = sorted({normalize_np(v) for v in vocabulary if v.strip()} | set(_BASE_WORDS))
    merges = learn_bpe_merges(texts, max_merges)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for t in [BOS, EOS] + alphabet + [ch + "</w>" for ch in alphabet] + [a + b for a, b in merges]:
        vocab.setdefault(t, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TEXT_LEN)


@dataclass(frozen=True)
class TinySize:
    """The knobs of the tiny architecture. The defaults (~1.1M parameters) keep tests fast; the demo
    checkpoint uses a larger size that learns the rendered domain within a CPU budget."""

    hidden: int = 64
    vit_layers: int = 2
    text_layers: int = 2
    detr_encoder_layers: int = 2
    detr_decoder_layers: int = 2
    num_queries: int = 32
    heads: int = 2
    # "vit": Sam3ViTModel with patch 14 (what facebook/sam3 has); "conv": the residual CNN of
    # model/conv_backbone.py, total stride 2 ** len(conv_channels), which learns shapes far faster on a CPU.
    backbone: str = "vit"
    conv_channels: tuple[int, ...] = (24, 32, 48, 64)
    conv_blocks: int = 1
    # DETR encoder/decoder dropout. Transformers' 0.1 regularises a model that has more data than it can
    # fit; the demo's CPU-trained model underfits (its gold and train-split scores are alike), so it uses 0.
    dropout: float = 0.1


def tiny_sam3_config(
    vocab_size: int,
    image_size: int = 224,
    tokenizer: CLIPTokenizer | None = None,
    size: TinySize = TinySize(),
) -> Sam3Config:
    """A real Sam3Config at toy scale: a ViT (patch 14, one global-attention layer) or a small CNN backbone,
    DETR encoder/decoder, CLIP text encoder, all at `size.hidden`."""
    patch = 14 if size.backbone == "vit" else 2 ** len(size.conv_channels)
    if image_size % patch or image_size // patch < 8:
        raise ValueError(
            f"image_size must be a multiple of {patch} and at least {8 * patch}; got {image_size}"
        )
    grid = image_size // patch
    hidden, heads = size.hidden, size.heads
    special = {}
    if tokenizer is not None:
        special = {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
    return Sam3Config(
        vision_config={
            "backbone_config": _backbone_config(size, image_size),
            "fpn_hidden_size": hidden,
            "backbone_feature_sizes": [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]],
        },
        text_config={
            "model_type": "clip_text_model",
            "vocab_size": vocab_size,
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "projection_dim": hidden,
            "num_hidden_layers": size.text_layers,
            "num_attention_heads": heads,
            "max_position_embeddings": MAX_TEXT_LEN,
            **special,
        },
        geometry_encoder_config={
            "hidden_size": hidden,
            "num_layers": 1,
            "num_attention_heads": heads,
            "intermediate_size": 2 * hidden,
        },
        detr_encoder_config={
            "hidden_size": hidden,
            "num_layers": size.detr_encoder_layers,
            "num_attention_heads": heads,
            "intermediate_size": 2 * hidden,
            "dropout": size.dropout,
        },
        detr_decoder_config={
            "hidden_size": hidden,
            "num_layers": size.detr_decoder_layers,
            "num_queries": size.num_queries,
            "num_attention_heads": heads,
            "intermediate_size": 2 * hidden,
            "dropout": size.dropout,
        },
        mask_decoder_config={"hidden_size": hidden, "num_upsampling_stages": 3, "num_attention_heads": heads},
    )


def _backbone_config(size: TinySize, image_size: int) -> dict:
    if size.backbone == "conv":
        return {
            "model_type": conv_backbone.MODEL_TYPE,
            "hidden_size": size.hidden,
            "channels": list(size.conv_channels),
            "blocks_per_stage": size.conv_blocks,
            "image_size": image_size,
        }
    if size.backbone != "vit":
        raise ValueError(f"TinySize.backbone must be 'vit' or 'conv'; got {size.backbone!r}")
    return {
        "model_type": "sam3_vit_model",
        "hidden_size": size.hidden,
        "intermediate_size": 2 * size.hidden,
        "num_hidden_layers": size.vit_layers,
        "num_attention_heads": size.heads,
        "image_size": image_size,
        "patch_size": 14,
        "window_size": 8,
        "global_attn_indexes": [size.vit_layers - 1],
        "pretrain_image_size": image_size,
    }


def processor_config(image_size: int, patch: int = 14) -> dict:
    """What `Sam3Processor.save_pretrained` writes for a Sam3ImageProcessor resized to `image_size`.

    Written by hand because Sam3ImageProcessor needs torchvision, which a CPU-only install may lack; the
    loader (`conceptengine.model.processing`) reads the same file either way.
    """
    return {
        "image_processor": {
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": "Sam3ImageProcessor",
            "image_std": [0.5, 0.5, 0.5],
            "mask_size": {"height": 4 * (image_size // patch), "width": 4 * (image_size // patch)},
            "resample": 2,  # PIL bilinear
            "rescale_factor": 1 / 255,
            "size": {"height": image_size, "width": image_size},
        },
        "point_pad_value": -10,
        "processor_class": "Sam3Processor",
        "target_size": image_size,
    }


def init_local_queries(model: Sam3Model, locality: float = 4.0) -> None:
    """Start the DETR queries local: reference boxes spread over the image and attention biased to them.

    - Reference boxes: centres uniform in [0.05, 0.95], sides 0.2, as Deformable DETR initialises its
      reference points. The default embedding init puts every box at the image centre, so every query has
      the same positional query and attention bias.
    - Box relative position bias (Box-RPB): each axis' MLP starts as `-locality` times how far a key lies
      outside the query's box (in the decoder's log-scaled deltas), the same for every head, so a query
      attends to its box's region from the first step. Random init makes it uniform over the image.
    Trained from scratch with the defaults, the demo model predicted the same few boxes for every image
    after 600 CPU steps: its queries did not look where their boxes were. Only initial values change;
    the architecture is transformers' own.
    """
    dec = model.detr_decoder
    ref = dec.reference_points.weight
    with torch.no_grad():
        centres = torch.rand(ref.shape[0], 2) * 0.9 + 0.05
        sides = torch.full((ref.shape[0], 2), 0.2)
        ref.copy_(torch.logit(torch.cat([centres, sides], dim=1)))
        for mlp in (dec.box_rpb_embed_x, dec.box_rpb_embed_y):
            # Inputs: (key - box start, key - box end); inside the box the first is >= 0, the second <= 0.
            mlp.layer1.weight[:2] = torch.tensor([[-1.0, 0.0], [0.0, 1.0]])
            mlp.layer1.bias[:2] = 0.0
            mlp.layer2.weight[:, :2] = -locality
            mlp.layer2.weight[:, 2:] *= 0.1
            mlp.layer2.bias.zero_()


def build_tiny_sam3(
    out_dir: str, vocabulary: list[str], image_size: int = 224, seed: int = 0, size: TinySize = TinySize()
) -> str:
    """Write a randomly initialised tiny Sam3Model + Sam3Processor files to `out_dir`; returns `out_dir`.

    Deterministic given (vocabulary, image_size, seed): the global torch RNG is forked, not disturbed.
    """
    if not vocabulary:
        raise ValueError("build_tiny_sam3: vocabulary is empty; pass the ontology's noun phrases")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_clip_tokenizer(vocabulary)
    config = tiny_sam3_config(len(tokenizer), image_size, tokenizer, size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam3Model(config).eval()
        init_local_queries(model)
    model.save_pretrained(out)
    save_processor_files(out, tokenizer, config, image_size)
    return str(out)


def save_processor_files(out: Path, tokenizer, config: Sam3Config, image_size: int) -> None:
    """The tokenizer and processor config next to a saved Sam3Model, as `Sam3Processor.from_pretrained`
    (and the engine's torchvision-free fallback) read them."""
    tokenizer.save_pretrained(out)
    tok_cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg["processor_class"] = "Sam3Processor"
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2, sort_keys=True) + "\n")
    patch = config.vision_config.backbone_config.patch_size
    (out / "processor_config.json").write_text(
        json.dumps(processor_config(image_size, patch), indent=2) + "\n"
    )
