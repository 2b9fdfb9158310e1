"""A small but real image-text-to-text verifier the project builds itself, offline.

CI and air-gapped clusters cannot reach a model hub, so the demo and the tests use a LLaVA
(`LlavaForConditionalGeneration`: a CLIP vision tower, a projector and a Llama text model) with a
tiny config and a byte-level BPE tokenizer trained here on the verifier prompts plus the caller's
vocabulary. It is saved with `save_pretrained`, so the loading code is exactly the one that loads a
real MLLM checkpoint. Weights are random until a later round fine-tunes it on human verdicts; the
build is deterministic given the seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from conceptengine.verifiers.choices import EV, MV
from conceptengine.verifiers.prompts import corpus

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", IMAGE_TOKEN]

# A minimal chat template: images first, then the question, then the assistant turn whose first
# token is the answer letter. Real MLLMs ship their own; the backend uses whichever is saved.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>{{ '\\n' }}{% else %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{{ '\\n' }}"
    "{% elif message['role'] == 'assistant' %}ASSISTANT:"
    "{% for item in message['content'] %}{{ item['text'] }}{% endfor %}</s>{{ '\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _train_tokenizer(vocabulary: list[str]) -> PreTrainedTokenizerFast:
    """Byte-level BPE: any text encodes (no <unk> for unseen NPs); the answer letters stay single tokens."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = corpus(sorted({str(v) for v in vocabulary}))
    texts.append("USER: ASSISTANT: " + " ".join(MV.letters + EV.letters))
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )
    for letter in sorted(set(MV.letters + EV.letters)):
        ids = fast.encode(letter, add_special_tokens=False)
        if len(ids) != 1:  # byte-level BPE always has single letters; guard against future changes
            raise RuntimeError(f"answer letter {letter!r} is not a single token: {ids}")
    return fast


def build_tiny_verifier(
    out_dir: str,
    vocabulary: list[str],
    seed: int = 0,
    image_size: int = 112,
    patch_size: int = 16,
) -> str:
    """Build, save and return the path of a tiny LLaVA verifier (~1M parameters).

    `vocabulary`: the noun phrases / words the verifier will see, so the tokenizer compresses them.
    `image_size` must equal the view size the verifier stage renders (`view_size`).
    """
    if image_size % patch_size:
        raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(list(vocabulary))

    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=64,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.save_pretrained(out)

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped again by the "default" strategy
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )
    processor.save_pretrained(out)
    return str(out)
