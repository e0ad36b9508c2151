"""Streaming (prequential) evaluation of the product against baselines on MovieLens:
`recsys evaluate` (``evaluation.run``), report in ``reports/eval/``."""
