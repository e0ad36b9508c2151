"""What the demo prints about the model's held-out figures."""

from __future__ import annotations

import json

from core.settings import PROJECT_ROOT
from infra.demo import EVAL_RESULTS, explain_metrics


def _model(tmp_path):
    path = tmp_path / "20260101T000000Z"
    path.mkdir()
    metrics = {"recall_at_10": 0.0634, "popularity": {"recall_at_10": 0.0732}}
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def test_the_demo_explains_the_batch_figures_and_quotes_the_streaming_evaluation(tmp_path):
    text = explain_metrics(_model(tmp_path), PROJECT_ROOT / EVAL_RESULTS)
    assert "model 0.0634, popularity 0.0732" in text
    assert "batch model alone" in text and "popularity can match or beat it" in text
    systems = json.loads((PROJECT_ROOT / EVAL_RESULTS).read_text())["figures"]["systems"]
    for name in ("popularity", "batch_two_tower", "product"):
        assert f"{systems[name]['hr']:.4f}" in text
    assert "reports/eval/README.md" in text


def test_without_the_evaluation_results_it_names_the_command(tmp_path):
    text = explain_metrics(_model(tmp_path), tmp_path / "missing.json")
    assert "recsys evaluate" in text
