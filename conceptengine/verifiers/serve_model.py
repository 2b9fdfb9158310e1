"""One served verifier: OpenAI chat messages in, the next token's top-K log-probabilities out.

Wraps the in-process transformers backend (any `AutoModelForImageTextToText` checkpoint) and
reports what an OpenAI-compatible server reports: the full-vocabulary log-softmax of the next-token
logits, its top K entries, and the greedy token. Because the values are true log-softmax values,
a client that renormalises them over the choice tokens gets the backend's own choice softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from conceptengine.verifiers import data_url
from conceptengine.verifiers.transformers_backend import TransformersBackend


class BadRequest(ValueError):
    """The request cannot be answered as sent; the message says which field to fix (HTTP 400)."""


@dataclass(frozen=True)
class Question:
    """A chat request reduced to what the model sees: rendered text and images, plus how many logprobs."""

    text: str
    images: list[Image.Image]
    top_logprobs: int


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float


@dataclass(frozen=True)
class Answer:
    token: TokenLogprob  # the greedy next token
    top: list[TokenLogprob]  # most likely first
    prompt_tokens: int


class ServedModel:
    def __init__(self, name: str, model_dir: str, device: str = "cpu", dtype: str = "auto"):
        self.name = name
        self.backend = TransformersBackend(model_dir, device=device, dtype=dtype, version=name)
        self.tokenizer = self.backend.processor.tokenizer
        self.vocab_size = int(self.backend.model.get_output_embeddings().weight.shape[0])

    # -- request -> Question ----------------------------------------------------------------------------

    def question(self, messages: list[dict[str, Any]], top_logprobs: int) -> Question:
        """Render OpenAI-style messages with the checkpoint's chat template; images stay in their place."""
        if not messages:
            raise BadRequest("messages must hold at least one message")
        hf_messages, images = [], []
        for i, msg in enumerate(messages):
            role, content = msg.get("role"), msg.get("content")
            if role not in ("system", "user", "assistant"):
                raise BadRequest(f"messages[{i}].role must be system, user or assistant, got {role!r}")
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            if not isinstance(parts, list):
                raise BadRequest(f"messages[{i}].content must be a string or a list of content parts")
            hf_parts = []
            for j, part in enumerate(parts):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    hf_parts.append({"type": "text", "text": str(part.get("text", ""))})
                elif kind == "image_url":
                    url = (part.get("image_url") or {}).get("url", "")
                    try:
                        images.append(data_url.decode(url))
                    except ValueError as exc:
                        raise BadRequest(f"messages[{i}].content[{j}]: {exc}") from None
                    hf_parts.append({"type": "image"})
                else:
                    raise BadRequest(
                        f"messages[{i}].content[{j}].type must be text or image_url, got {kind!r}"
                    )
            hf_messages.append({"role": role, "content": hf_parts})
        return Question(self._render(hf_messages), images, max(0, min(top_logprobs, self.vocab_size)))

    def _render(self, messages: list[dict[str, Any]]) -> str:
        processor = self.backend.processor
        if getattr(processor, "chat_template", None):
            return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # No template saved: the in-process backend's plain layout (image tokens, question, newline).
        image_token = getattr(processor, "image_token", "<image>")
        n_images = sum(p["type"] == "image" for m in messages for p in m["content"])
        texts = [p["text"] for m in messages for p in m["content"] if p["type"] == "text"]
        return image_token * n_images + "\n" + "\n".join(texts) + "\n"

    # -- the model ------------------------------------------------------------------------------------

    def answer(self, questions: list[Question]) -> list[Answer]:
        """One forward pass for the batch (the backend pads left and rebuilds positions per row)."""
        processor = self.backend.processor
        images = [q.images for q in questions] if any(q.images for q in questions) else None
        batch = processor(text=[q.text for q in questions], images=images, padding=True, return_tensors="pt")
        batch = {k: v.to(self.backend.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        logprobs = torch.log_softmax(self.backend.next_token_logits(batch).float(), dim=-1)
        k = max(1, max(q.top_logprobs for q in questions))
        values, ids = torch.topk(logprobs, k, dim=-1)
        values, ids = values.cpu().tolist(), ids.cpu().tolist()
        prompt_tokens = batch["attention_mask"].sum(-1).cpu().tolist()
        out = []
        for q, v, t, n in zip(questions, values, ids, prompt_tokens, strict=True):
            top = [TokenLogprob(self.tokenizer.decode([tid]), lp) for tid, lp in zip(t, v)]
            out.append(Answer(token=top[0], top=top[: q.top_logprobs], prompt_tokens=int(n)))
        return out
