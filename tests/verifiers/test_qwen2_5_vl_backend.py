"""TransformersBackend on a tiny Qwen2.5-VL: the real architecture, processor and chat template with random
weights, saved in the layout of `Qwen/Qwen2.5-VL-7B-Instruct` and loaded back by path, so the code that would
load that checkpoint is the code under test. Qwen's rotary positions are 3-D (text, height, width) and its
image token count depends on the image size, unlike the tiny LLaVA the other tests use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLImageProcessorPil,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from conceptengine.engine.runner import LocalRunner, run_stage
from conceptengine.engine.stage import StageConfig, get_stage
from conceptengine.verifiers import choices
from conceptengine.verifiers.backend import VerifierBackend
from conceptengine.verifiers.prompts import corpus, ev_prompt, mv_prompt
from conceptengine.verifiers.stage import VERIFIED
from conceptengine.verifiers.transformers_backend import TransformersBackend

from .conftest import VOCAB, proposals_table, square_mask

# Qwen/Qwen2.5-VL-7B-Instruct's chat_template.json, verbatim (as in transformers'
# tests/models/qwen2_5_vl/test_processor_qwen2_5_vl.py, `prepare_processor_dict`).
QWEN2_5_VL_CHAT_TEMPLATE = "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"

# Qwen2's special tokens in their vocabulary order (ids 151643.. in the real tokenizer; here after the merges).
QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
VISION = "<|vision_start|><|image_pad|><|vision_end|>"
MIN_PIXELS, MAX_PIXELS = 28 * 28, 56 * 56  # a 112x112 view becomes 56x56: 4x4 patches of 14, 4 merged tokens


def _qwen_tokenizer() -> Qwen2Tokenizer:
    """Byte-level BPE with Qwen2's own normalizer and pre-tokenizer, trained on the verifier prompts."""
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = corpus(VOCAB) + ["system\nYou are a helpful assistant.\nuser\nassistant\n"]
    bpe.train_from_iterator(texts, trainer=trainer)
    trained = json.loads(bpe.to_str())["model"]
    vocab = dict(trained["vocab"])
    vocab.update({tok: len(vocab) + i for i, tok in enumerate(QWEN_SPECIALS)})
    return Qwen2Tokenizer(  # the special tokens as in Qwen2.5-VL-Instruct's tokenizer_config.json
        vocab=vocab,
        merges=[tuple(m) for m in trained["merges"]],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=QWEN_SPECIALS[1:],
    )


@pytest.fixture(scope="module")
def qwen_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("qwen2_5_vl") / "qwen2_5_vl-tiny"
    tokenizer = _qwen_tokenizer()
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in QWEN_SPECIALS}
    config = Qwen2_5_VLConfig(
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,  # 2x2 merged tokens per window: block 0 windowed, block 1 full attention
            "fullatt_block_indexes": [1],
            "out_hidden_size": 64,
            "initializer_range": 0.1,
        },
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            # M-RoPE: head_dim 16 -> 8 rotary frequencies split over (text, height, width)
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6},
            # larger than the default 0.02 so the scores depend visibly on the inputs and the positions
            "initializer_range": 0.1,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(config).eval().save_pretrained(out)
    # The processor in the hub checkpoint's layout: preprocessor_config.json, the tokenizer files and
    # chat_template.json. (`Qwen2_5_VLProcessor(...)` itself cannot be built without torchvision, which its
    # video processor needs and which this CPU install lacks; the backend must load it all the same.)
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    image_processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "chat_template.json").write_text(json.dumps({"chat_template": QWEN2_5_VL_CHAT_TEMPLATE}, indent=2))
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    preprocessor["processor_class"] = "Qwen2_5_VLProcessor"
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return str(out)


@pytest.fixture(scope="module")
def qwen(qwen_path: str) -> TransformersBackend:
    return TransformersBackend(qwen_path, batch_size=8)


def _images(n: int, seed: int = 0, size: tuple[int, int] = (112, 112)) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(n)]


def _requests() -> tuple[list[list[Image.Image]], list[str], list[str]]:
    """MV (2 views) and EV (1 view) questions mixed: prompts and image token counts of different lengths."""
    imgs = _images(5)
    wide = _images(1, seed=1, size=(56, 168))[0]  # another aspect ratio: a different (t, h, w) grid
    views = [imgs[:2], [imgs[2]], [wide], imgs[3:5], [imgs[0]]]
    prompts = [
        mv_prompt("red square"),
        ev_prompt("star", 0),
        ev_prompt("blue triangle", 3),
        mv_prompt("a striped circle nobody has seen before"),
        ev_prompt("x", 1),
    ]
    tasks = ["mv", "ev", "ev", "mv", "ev"]
    return views, prompts, tasks


def test_loads_the_qwen2_5_vl_checkpoint(qwen: TransformersBackend, qwen_path: str) -> None:
    assert isinstance(qwen, VerifierBackend) and qwen.version == "qwen2_5_vl-tiny"
    assert isinstance(qwen.model, Qwen2_5_VLForConditionalGeneration)
    assert qwen.model.config.model_type == "qwen2_5_vl"
    assert isinstance(qwen.processor, Qwen2_5_VLProcessor)
    assert isinstance(qwen.processor.tokenizer, Qwen2Tokenizer)
    assert qwen.processor.tokenizer.padding_side == "left"
    assert qwen.processor.image_token == "<|image_pad|>"
    assert qwen.processor.image_token_id == qwen.model.config.image_token_id
    for letter in choices.EV.letters:  # EV's letters include MV's
        assert len(qwen.processor.tokenizer.encode(letter, add_special_tokens=False)) == 1


@pytest.mark.parametrize("n_images", [0, 1, 2])
def test_render_prompt_is_qwen_s_chat_template(qwen: TransformersBackend, n_images: int) -> None:
    prompt = mv_prompt("red square")
    text = qwen.render_prompt(n_images, prompt)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{VISION * n_images}{prompt}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert text.count("<|vision_start|>") == n_images


def test_encode_expands_each_image_to_its_merged_patches(qwen: TransformersBackend) -> None:
    views, prompts, _ = _requests()
    batch = qwen.encode(views, prompts)
    grids = batch["image_grid_thw"]
    assert grids.tolist()[:3] == [[1, 4, 4], [1, 4, 4], [1, 4, 4]]
    assert grids.tolist()[3] == [1, 2, 6]  # 56x168 keeps its aspect ratio
    image_id = qwen.model.config.image_token_id
    assert int((batch["input_ids"] == image_id).sum()) == int(grids.prod(-1).sum()) // 4  # 2x2 merge
    mask = batch["attention_mask"]
    assert bool(mask[:, -1].all()) and not bool(mask.all())  # left padded: every row ends at the last column


def test_scores_mv_and_ev_questions(qwen: TransformersBackend) -> None:
    views, prompts, tasks = _requests()
    for task, choice_set in (("mv", choices.MV), ("ev", choices.EV)):
        rows = [i for i, t in enumerate(tasks) if t == task]
        probs = qwen.score([views[i] for i in rows], [prompts[i] for i in rows], list(choice_set.letters))
        assert probs.shape == (len(rows), len(choice_set)) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
        assert np.ptp(probs, axis=0).max() > 1e-3  # the answer depends on the question and the images


def test_batching_does_not_change_scores(qwen: TransformersBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """One padded batch (different lengths and image counts) = each request alone = the model's own forward.

    The last equality is what `_OWN_POSITION_IDS` protects: Qwen's 3-D rotary positions are computed by the
    model from input_ids, image grids and the attention mask; 1-D ids from the mask would change the scores.
    """
    views, prompts, _ = _requests()
    letters = list(choices.EV.letters)
    batched = qwen.score(views, prompts, letters)
    alone = np.concatenate([qwen.score([v], [p], letters) for v, p in zip(views, prompts)])
    np.testing.assert_allclose(batched, alone, atol=1e-4)

    ids = [qwen.processor.tokenizer.convert_tokens_to_ids(t) for t in letters]
    for i, (v, p) in enumerate(zip(views, prompts)):
        enc = qwen.processor(text=[qwen.render_prompt(len(v), p)], images=[v], return_tensors="pt")
        with torch.inference_mode():
            logits = qwen.model(**enc).logits[0, -1]
        manual = torch.softmax(logits[ids].double(), dim=-1).numpy()
        np.testing.assert_allclose(batched[i], manual, atol=1e-4)

    monkeypatch.setattr(qwen, "batch_size", 2)  # batches of 2: other neighbours, other padding
    np.testing.assert_allclose(qwen.score(views, prompts, letters), batched, atol=1e-4)


@pytest.fixture(scope="module")
def proposals(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    pairs = [
        ("red square", [square_mask(5, 5, 10), square_mask(40, 30, 12)]),
        ("star", []),  # a negative pair: EV only
        ("blue triangle", [square_mask(20, 20, 8)]),
    ]
    return proposals_table(tmp_path_factory.mktemp("qwen_stage"), pairs)


def _verify(table: pa.Table, **params) -> list[dict]:
    return run_stage(
        LocalRunner(), get_stage("ai_verify"), StageConfig(), params, table, "pair_id", VERIFIED
    ).to_pylist()


def test_ai_verify_stage_runs_mv_and_ev_through_qwen(proposals: pa.Table, qwen_path: str) -> None:
    rows = _verify(proposals, backend="transformers", model_path=qwen_path, infer_batch_size=3)
    assert [len(r["mv_probs"]) for r in rows] == [2, 0, 1]
    for r in rows:
        assert r["error"] is None and r["verifier_version"] == Path(qwen_path).name
        assert len(r["ev_probs"]) == len(choices.EV) and abs(sum(r["ev_probs"]) - 1) < 1e-5
        for p in r["mv_probs"]:
            assert len(p) == len(choices.MV) and abs(sum(p) - 1) < 1e-5

    alone = _verify(proposals.slice(2, 1), backend="transformers", model_path=qwen_path, infer_batch_size=1)
    np.testing.assert_allclose(rows[2]["mv_probs"], alone[0]["mv_probs"], atol=1e-4)
    np.testing.assert_allclose(rows[2]["ev_probs"], alone[0]["ev_probs"], atol=1e-4)
