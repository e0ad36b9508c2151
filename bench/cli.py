"""`recsys bench ...`: the benchmarks, each loaded only when run (``infra.cli.lazy``)."""

from __future__ import annotations

import typer

from infra.cli.lazy import lazy_group

COMMANDS = {
    "catalog": ("bench.catalog:app", "Catalogue writes/s through the dataflow, encoder cost."),
    "flow": ("bench.flow:app", "Dataflow events/s vs a no-op Bytewax flow, then freshness."),
    "serving": ("bench.serving:app", "The service under wrk at fixed loads and at peak."),
    "synthetic": ("bench.synthetic:app", "Generate the synthetic world's events and model."),
}

app = typer.Typer(
    cls=lazy_group(COMMANDS),
    help="Benchmarks; figures and method in docs/benchmarks.md.\n\n"
    "Example: recsys bench flow --events 200000 --workers 1",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)


@app.callback()
def bench() -> None:
    """Benchmarks; figures and method in docs/benchmarks.md."""
