"""Item text embeddings for training, cached so reruns skip the encoder.

The text vector is what lets an item nobody has interacted with yet get a sensible
place in the item space; it is frozen, so computing it once per catalogue is enough.
The text is ``core.items.item_text`` and the encoder is ``encoder``, the same two the
dataflow uses for items written at run time.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from core.items import item_text
from core.records import ItemRecord
from encoder import MODEL_NAME, TEXT_DIM, encode

__all__ = ["MODEL_NAME", "TEXT_DIM", "cache_key", "embed_items", "encode", "item_text"]


def cache_key(texts: list[str], model_name: str = MODEL_NAME) -> str:
    h = hashlib.sha256(model_name.encode())
    for t in texts:
        h.update(b"\0" + t.encode())
    return h.hexdigest()


def embed_items(
    items: list[ItemRecord], cache_dir: Path, batch_size: int = 128, quiet: bool = False
) -> np.ndarray:
    """L2-normalised 384-d text vectors, one row per item, from cache when possible."""
    texts = [item_text(i) for i in items]
    path = Path(cache_dir) / f"text-{cache_key(texts)[:32]}.npy"
    if path.is_file():
        cached: np.ndarray = np.load(path)
        if cached.shape == (len(texts), TEXT_DIM):
            return cached
    vectors = encode(texts, batch_size=batch_size, quiet=quiet)
    _save_atomic(path, vectors)
    return vectors


def _save_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
