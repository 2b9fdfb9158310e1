"""Verifier backend for any `AutoModelForImageTextToText` checkpoint, run in-process with PyTorch.

Requests are batched through the model's own processor and chat template; the tokenizer pads on
the left so that every row's next token sits at the last position. Position ids are rebuilt from
the attention mask, so a padded row scores exactly as it would alone (results never depend on what
else was in the batch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

from conceptengine.verifiers.backend import chat_prompt, check_request, choice_token_ids, softmax

# Models whose rotary positions are multimodal (3-D) compute their own position ids; 1-D ids would
# be wrong there. Their processors also pad left, which is what matters for reading the last logit.
_OWN_POSITION_IDS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "glm4v", "glm4v_moe", "qwen3_5")


def _load_processor(model_path: str):
    """The checkpoint's processor, or, where torchvision is missing, the same processor minus its video part.

    Qwen-VL-style processors (Qwen2.5-VL ...) also load a video processor, and every transformers video
    processor needs torchvision, which has no CPU wheel for the pinned torch (README): AutoProcessor then
    raises ImportError for a checkpoint whose images need nothing but PIL. Verifiers never send video, so
    the processor is rebuilt without that attribute (sub-processors are read off `__init__`'s parameters).
    """

    try:
        return AutoProcessor.from_pretrained(model_path)
    except ImportError as err:
        if "torchvision" not in str(err).lower():
            raise
        processor_cls = PROCESSOR_MAPPING.get(type(AutoConfig.from_pretrained(model_path)), None)
        if processor_cls is None or "video_processor" not in processor_cls.get_attributes():
            raise

    class ImagesOnly(processor_cls):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(
                image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **kwargs
            )

    return ImagesOnly.from_pretrained(model_path)


class TransformersBackend:
    """Loads with `from_pretrained(model_path)`: a local directory, or a model id where a hub is reachable."""

    def __init__(
        self,
        model_path: str,
        device: str = "cpu",
        dtype: str = "auto",
        batch_size: int = 16,
        version: str | None = None,
    ):

        if batch_size < 1:
            raise ValueError(f"verifier batch_size must be >= 1, got {batch_size}")
        local = Path(model_path)
        if not local.exists() and (local.is_absolute() or model_path.startswith(".")):
            raise FileNotFoundError(f"verifier model_path {model_path!r} does not exist")
        torch_dtype = {
            "auto": "auto",
            "float32": torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
        }.get(dtype)
        if torch_dtype is None:
            raise ValueError(f"verifier dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.processor = _load_processor(model_path)
        self.processor.tokenizer.padding_side = "left"
        self.model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch_dtype)
        self.model.to(self.device).eval()
        self.version = version or local.name or str(model_path)
        self._token_ids: dict[tuple[str, ...], list[int]] = {}

    # -- helpers ---------------------------------------------------------------------------------------

    def token_ids(self, choice_tokens: list[str]) -> list[int]:
        key = tuple(choice_tokens)
        if key not in self._token_ids:
            self._token_ids[key] = choice_token_ids(self.processor.tokenizer, choice_tokens)
        return self._token_ids[key]

    def render_prompt(self, n_images: int, prompt: str) -> str:
        return chat_prompt(self.processor, n_images, prompt)

    def encode(self, views: list[list[Image.Image]], prompts: list[str]) -> dict[str, torch.Tensor]:
        texts = [self.render_prompt(len(v), p) for v, p in zip(views, prompts)]
        images = [list(v) for v in views] if any(views) else None
        batch = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    @torch.inference_mode()
    def next_token_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, vocab) logits at each row's last non-pad position."""
        mask = batch["attention_mask"]
        kwargs = dict(batch)
        if self.model.config.model_type not in _OWN_POSITION_IDS:
            kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        left_padded = bool(mask[:, -1].all())
        if left_padded:
            kwargs["logits_to_keep"] = 1  # only the last position is needed: saves a (B, T, vocab) tensor
        logits = self.model(**kwargs).logits
        if left_padded:
            return logits[:, -1, :]
        last = mask.shape[1] - 1 - mask.flip(-1).long().argmax(-1)  # right padding: last non-pad index
        return logits[torch.arange(logits.shape[0], device=logits.device), last, :]

    @torch.inference_mode()
    def generate(
        self, views: list[list[Image.Image]], prompts: list[str], max_new_tokens: int = 48
    ) -> list[str]:
        """Greedy free-text answers, one per request (the captioner's path; verifying reads logits instead)."""
        if len(views) != len(prompts):
            raise ValueError(f"got {len(views)} view lists but {len(prompts)} prompts; need one per prompt")
        out: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            stop = start + self.batch_size
            batch = self.encode(views[start:stop], prompts[start:stop])
            tokens = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
            new = tokens[:, batch["input_ids"].shape[1] :]
            out += self.processor.batch_decode(new, skip_special_tokens=True)
        return out

    # -- the Protocol ---------------------------------------------------------------------------------

    def score(
        self, views: list[list[Image.Image]], prompts: list[str], choice_tokens: list[str]
    ) -> np.ndarray:
        check_request(views, prompts, choice_tokens)
        ids = self.token_ids(choice_tokens)
        out = np.zeros((len(prompts), len(ids)), dtype=np.float32)
        for start in range(0, len(prompts), self.batch_size):
            stop = start + self.batch_size
            logits = self.next_token_logits(self.encode(views[start:stop], prompts[start:stop]))
            picked = logits[:, ids].float().cpu().numpy().astype(np.float64)
            out[start:stop] = softmax(picked).astype(np.float32)
        return out
