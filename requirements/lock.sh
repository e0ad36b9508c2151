#!/usr/bin/env bash
# Regenerates the lock files from pyproject.toml (`just lock`), for CPython 3.11 on
# x86_64 Linux (glibc 2.36, the python:3.11-slim image):
#   dev.lock      everything: runtime + [train] + [eval] + [dev]  (README's setup, CI)
#   train.lock    runtime + [train]                                (the Docker image)
#   runtime.lock  runtime only                                     (serving, dataflow, CLI)
# dev.lock is resolved first; the others take its versions, so the three agree.
# Versions already locked are kept while pyproject.toml still allows them: pass
# `--upgrade` (or `--upgrade-package NAME`) to move them. torch is the CPU build
# (torch-cpu.txt), found in PIP_FIND_LINKS when set or else on PyTorch's CPU index.
set -euo pipefail
cd "$(dirname "$0")/.."
torch_wheels="${PIP_FIND_LINKS:-https://download.pytorch.org/whl/cpu/torch/}"
compile() {
  uv pip compile pyproject.toml --quiet --find-links "$torch_wheels" \
    --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
    --custom-compile-command "just lock" "$@"
}
compile --extra dev --override requirements/torch-cpu.txt -o requirements/dev.lock "$@"
compile --extra train -c requirements/dev.lock -o requirements/train.lock
compile -c requirements/dev.lock -o requirements/runtime.lock
echo "locked: requirements/dev.lock, train.lock, runtime.lock"
