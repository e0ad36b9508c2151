"""One home for every setting: each default is defined once, in core/settings.py."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from core.fold import FoldParams
from core.ranking import RankParams
from core.settings import (
    ENV_NAMES,
    FIELD_GROUPS,
    PROJECT_ROOT,
    RankingSettings,
    Settings,
    nested,
)

PRODUCT_PACKAGES = ("core", "featurestore", "eventlog", "encoder", "dataflow", "api", "training")
SETTING_NAMES = {n for n, group in FIELD_GROUPS.items() if group is not None}


def _shadowing_defaults(path: Path) -> list[str]:
    """Parameters and attributes named like a setting that carry their own default."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults))
            defaults += node.args.defaults + node.args.kw_defaults
            for arg, default in zip(args, defaults, strict=True):
                if arg.arg in SETTING_NAMES and isinstance(default, ast.Constant):
                    if default.value is not None:
                        found.append(f"{path.name}:{node.lineno} {node.name}({arg.arg}=...)")
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.AnnAssign)
                    and isinstance(stmt.target, ast.Name)
                    and stmt.target.id in SETTING_NAMES
                    and _is_default(stmt.value)
                ):
                    found.append(f"{path.name}:{stmt.lineno} {node.name}.{stmt.target.id}")
    return found


def _is_default(value: ast.expr | None) -> bool:
    """A literal, or ``Field(<literal>)``/``field(default=<literal>)``; not a bare description."""
    if isinstance(value, ast.Constant):
        return value.value is not None and value.value is not Ellipsis
    if isinstance(value, ast.Call):
        if value.args and isinstance(value.args[0], ast.Constant):
            return value.args[0].value not in (None, Ellipsis)
        return any(k.arg in ("default", "default_factory") for k in value.keywords)
    return False


def test_no_product_module_defines_a_settings_default_again():
    found = []
    for package in PRODUCT_PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            if path != PROJECT_ROOT / "core" / "settings.py":
                found += _shadowing_defaults(path)
    assert not found, f"defaults defined outside core/settings.py: {found}"


@pytest.mark.parametrize("params", [RankParams, FoldParams])
def test_per_request_and_fold_parameters_carry_no_defaults_of_their_own(params):
    for f in dataclasses.fields(params):
        assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, f.name


def test_rank_params_take_every_value_from_the_ranking_settings():
    ranking = RankingSettings()
    params = RankParams.from_settings(ranking)
    for f in dataclasses.fields(RankParams):
        assert f.name in RankingSettings.model_fields, f.name
        assert getattr(params, f.name) == getattr(ranking, f.name)


def test_fold_params_follow_the_settings():
    settings = Settings(_env_file=None, fold={"half_life_seconds": 7.0, "recent_items": 3})
    params = FoldParams.from_settings(settings)
    assert (params.half_life, params.recent_items) == (7.0, 3)
    assert dict(params.weights) == settings.fold.event_weights


def test_setting_names_are_unique_across_groups_and_map_to_env_names(monkeypatch):
    names = [n for group in Settings.model_fields.values() for n in _group_fields(group)]
    assert len(names) == len(set(names))
    monkeypatch.setenv("RECSYS_RANKING_WEIGHT_RECENT", "1.5")
    monkeypatch.setenv("RECSYS_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    s = Settings(_env_file=None)
    assert s.ranking.weight_recent == 1.5 and s.kafka_configured
    assert {"RECSYS_RANKING_WEIGHT_RECENT", "RECSYS_STATE_DIR", "RECSYS_QDRANT_URL"} <= ENV_NAMES


def test_nested_places_each_name_in_its_group():
    assert nested({"epoch_seconds": 0.2, "weight_recent": 1.0, "state_dir": "x"}) == {
        "recovery": {"epoch_seconds": 0.2},
        "ranking": {"weight_recent": 1.0},
        "state_dir": "x",
    }
    with pytest.raises(ValueError, match="unknown setting 'nope'"):
        nested({"nope": 1})


def test_derived_paths_follow_the_state_dir(tmp_path):
    s = Settings(_env_file=None, state_dir=tmp_path)
    assert (s.qdrant.path, s.recovery.dir, s.model_dir) == (
        tmp_path / "qdrant",
        tmp_path / "recovery",
        tmp_path / "models",
    )
    moved = s.with_values(state_dir=tmp_path / "b", model_dir=None, qdrant={"path": None})
    assert (
        moved.qdrant.path == tmp_path / "b" / "qdrant"
        and moved.model_dir == tmp_path / "b" / "models"
    )


def _group_fields(info) -> list[str]:
    model = info.annotation
    return (
        list(model.model_fields)
        if isinstance(model, type) and hasattr(model, "model_fields")
        else []
    )
