"""`recsys`: the operator's command line for the recommendation engine.

Each command runs an existing entry point (``infra.serve``, ``dataflow.run``,
``training.train`` ...) or talks to a running service over its HTTP API. Settings come
from ``RECSYS_*`` environment variables (``core/settings.py``); the CLI adds only
``RECSYS_API_URL`` and ``RECSYS_API_KEY``, for the commands that call the API.

The commands, by module: ``engine`` (serve, api, broker), ``models`` (models ...),
``system`` (replay, user show/delete, topics, init), and beside what they run, loaded
lazily: ``training.train`` (train), ``evaluation.run`` (evaluate), ``featurestore.publish``
(publish), ``infra.demo`` (demo), ``dataflow.run`` (dataflow), ``bench.cli`` (bench ...); with
``common`` (options, one-line errors), ``remote`` (the API client), ``registry`` (the
store and topics directly) and ``replay_command`` (replay's source, progress, summary).
A command imports what it runs inside its function, so that ``recsys --help`` and every
other command start without loading uvicorn, Bytewax, torch, Qdrant or Kafka clients.
"""

from __future__ import annotations

import typer

from infra.cli import engine, items, models, system
from infra.cli.lazy import lazy_group

# Commands that live beside what they run and load torch, Bytewax or Qdrant on import:
# imported only when run or asked for --help (``infra.cli.lazy``).
LAZY = {
    "train": ("training.train:app", "Train the two-tower and publish it."),
    "evaluate": ("evaluation.run:app", "Streaming evaluation against baselines on MovieLens."),
    "eval": ("evaluation.run:app", "Same as evaluate."),
    "publish": ("featurestore.publish:app", "Publish a trained version to the store directly."),
    "demo": ("infra.demo:app", "The whole loop on MovieLens 100K: broker, training, service."),
    "dataflow": ("dataflow.run:app", "The Bytewax dataflow alone, recovery on."),
    "bench": ("bench.cli:app", "Benchmarks: dataflow throughput, API latency, synthetic data."),
}

app = typer.Typer(
    name="recsys",
    cls=lazy_group(LAZY, hidden=frozenset({"eval"})),
    help="Run, feed and inspect the real-time recommendation engine.\n\n"
    "Settings come from RECSYS_* environment variables (README, Configuration); "
    "`recsys COMMAND --help` explains each command.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command()(engine.serve)
app.command()(engine.api)
app.command()(engine.broker)
app.command()(system.replay)
app.add_typer(system.user_app, name="user")
app.add_typer(items.items_app, name="items")
app.add_typer(models.models_app, name="models")
app.add_typer(system.topics_app, name="topics")
app.command()(system.init)


def main() -> None:
    """Console entry point (``recsys``)."""
    app(prog_name="recsys")
