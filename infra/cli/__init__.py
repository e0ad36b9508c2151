"""`recsys`: the operator's command line for the recommendation engine.

Each command runs an existing entry point (``infra.serve``, ``dataflow.run``,
``training.train`` ...) or talks to a running service over its HTTP API. Settings come
from ``RECSYS_*`` environment variables (``core/settings.py``); the CLI adds only
``RECSYS_API_URL`` and ``RECSYS_API_KEY``, for the commands that call the API.

The commands, by module: ``engine`` (serve, api, dataflow, broker, demo), ``models``
(train, evaluate, publish, models ...), ``system`` (replay, user show/delete, topics,
init), with
``common`` (options, one-line errors), ``remote`` (the API client), ``registry`` (the
store and topics directly) and ``replay_command`` (replay's source, progress, summary).
A command imports what it runs inside its function, so that ``recsys --help`` and every
other command start without loading uvicorn, Bytewax, torch, Qdrant or Kafka clients.
"""

from __future__ import annotations

from typing import Any

import typer

from infra.cli import engine, models, system

app = typer.Typer(
    name="recsys",
    help="Run, feed and inspect the real-time recommendation engine.\n\n"
    "Settings come from RECSYS_* environment variables (README, Configuration); "
    "`recsys COMMAND --help` explains each command.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# A wrapped entry point parses its own arguments, --help included.
wrapped: dict[str, Any] = {
    "context_settings": {
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "help_option_names": [],
    },
    "add_help_option": False,
}

app.command()(engine.serve)
app.command()(engine.api)
app.command()(engine.dataflow)
app.command()(engine.broker)
app.command(**wrapped)(models.train)
app.command(**wrapped)(models.evaluate)
app.command("eval", hidden=True, **wrapped)(models.evaluate)
app.command(**wrapped)(models.publish)
app.command(**wrapped)(engine.demo)
app.command()(system.replay)
app.add_typer(system.user_app, name="user")
app.add_typer(models.models_app, name="models")
app.add_typer(system.topics_app, name="topics")
app.command()(system.init)


def main() -> None:
    """Console entry point (``recsys``)."""
    app(prog_name="recsys")
