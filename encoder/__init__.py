"""The text encoder: item text to a 384-d L2-normalised vector (MiniLM, offline).

Training embeds the whole catalogue with it (``training.text`` caches the result); the
dataflow embeds items written at run time, then applies the published model's item
head (``core.items.ItemHead``). sentence-transformers and torch are the ``[train]``
extra and are imported only when a text is first encoded: on an image without them
``available()`` is False and callers fall back.
"""

from encoder.minilm import MODEL_NAME, TEXT_DIM, available, encode, warm

__all__ = ["MODEL_NAME", "TEXT_DIM", "available", "encode", "warm"]
