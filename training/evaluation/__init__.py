"""Streaming (prequential) evaluation of the product against baselines: ``python -m training.evaluate``."""
