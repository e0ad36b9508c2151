# Real-time recommendation engine. `just` lists the recipes.
# Recipes run with the project's virtualenv first on PATH when there is one.

export PATH := justfile_directory() / ".venv/bin" + ":" + env_var("PATH")
export HF_HUB_OFFLINE := "1"
export TRANSFORMERS_OFFLINE := "1"

# the operator CLI (`recsys --help`); run as a module so a venv installed before the
# `recsys` script existed still works
recsys := "python -m infra.cli"

# list the recipes
default:
    @just --list --unsorted

# install the project and its dev tools into .venv, at the locked versions
setup:
    test -d .venv || python3.11 -m venv .venv
    .venv/bin/pip install -r requirements/dev.lock -e '.[dev]'

# regenerate requirements/*.lock from pyproject.toml (keeps locked versions; just lock --upgrade)
lock *ARGS:
    requirements/lock.sh {{ARGS}}

# validate the deployment files offline: Kubernetes schemas, the Compose specification
validate-deploy:
    python -m pytest -q tests/test_deploy.py

# the whole loop on MovieLens 100K: broker, training, service, a live replay
demo *ARGS:
    {{recsys}} demo {{ARGS}}

# run the tests (unit, store contracts, real-broker integration, training)
test *ARGS:
    python -X faulthandler -m pytest -q {{ARGS}}

# fast unit tests only
test-unit *ARGS:
    python -m pytest -q -m "not integration" {{ARGS}}

# API + dataflow in one process on the embedded store; dev broker on :9092 unless configured
serve *ARGS:
    {{recsys}} serve {{ARGS}}

# the dataflow alone (production topology: needs RECSYS_QDRANT_URL), recovery on; -w 2, or -i/-a for a cluster
dataflow *ARGS:
    {{recsys}} dataflow {{ARGS}}

# the API alone (production topology: needs RECSYS_QDRANT_URL)
api *ARGS:
    {{recsys}} api {{ARGS}}

# retrain the two-tower: just train --until 1998-03-01T00:00:00Z --seed 7
train *ARGS:
    {{recsys}} train {{ARGS}}

# publish a trained version to the store and make it live (default: LATEST)
publish *ARGS:
    {{recsys}} publish {{ARGS}}

# the dev broker: just broker [run|start|stop|status] (run: in the foreground, Ctrl-C stops it)
broker action="run":
    {{recsys}} broker {{action}}

# replay an event log (or --movielens) into Kafka with its time gaps: just replay events.jsonl --speed 60
replay *ARGS:
    {{recsys}} replay {{ARGS}}

# a user's real-time features and recommendations from the running service: just user 405 --recs
user *ARGS:
    {{recsys}} user {{ARGS}}

# model versions through the running service: just models list | activate V | rollback V
# (list: a read key or none; the others: an admin key in RECSYS_API_KEY)
models *ARGS:
    {{recsys}} models {{ARGS}}

# streaming evaluation on MovieLens 100K, product vs baselines (3-9 min): just eval [--tune]
eval *ARGS:
    {{recsys}} evaluate {{ARGS}}

# --- bench ----------------------------------------------------------------------------

# the benchmarks with modest defaults (about 17 minutes on 2 cores): dataflow, API, catalogue writes
bench:
    {{recsys}} bench flow --events 1000000 --repeat 2 --duration 10
    {{recsys}} bench serving --repeat 3 --duration 8
    {{recsys}} bench catalog --items 2000 --repeat 3

# dataflow events/s (1 and 2 workers) vs a no-op Bytewax flow, then freshness at 5k/s: just bench-dataflow --events 200000 --workers 1
bench-dataflow *ARGS:
    {{recsys}} bench flow {{ARGS}}

# the service under wrk at fixed offered loads and at peak, recommendations vs healthz (100k items/users): just bench-api --rates 500
bench-api *ARGS:
    {{recsys}} bench serving {{ARGS}}

# lint, format check, the import layers and the types (ruff, import-linter, mypy)
lint:
    ruff check .
    ruff format --check .
    lint-imports
    mypy

# the strict type check alone (mypy over every package; configuration in pyproject.toml)
typecheck:
    mypy
