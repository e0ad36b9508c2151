"""Every command the README documents exists, with the options it shows: each `just X` is a
recipe of the justfile (``just --dry-run X`` runs), each `recsys X [Y]` a command whose
``--help`` answers and lists every ``--option`` the README gives it, and every `recsys`
command a justfile recipe calls exists too. So the README, the justfile and the CLI cannot
drift apart."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from infra.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
JUSTFILE = (ROOT / "justfile").read_text()
JUST = shutil.which("just") or str(Path(sys.executable).parent / "just")  # rust-just
runner = CliRunner()


def documented(prefix: str) -> list[str]:
    """The README's snippets starting with ``prefix``: inline code and fenced lines
    (``kubectl -n recsys …`` names a namespace, not a command)."""
    spans = [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", README.replace("```", ""))]
    fenced = [
        line.strip()
        for block in re.findall(r"```\w*\n(.*?)```", README, re.S)
        for line in block.splitlines()
    ]
    found = []
    for text in spans + fenced:
        for m in re.finditer(rf"(?:^|(?<!-n)[\s=(]|\.venv/bin/){prefix} [^`]*", text):
            found.append(m.group(0).strip(" =(").removeprefix(".venv/bin/").replace("\\|", "|"))
    return sorted(set(found))


def words(snippet: str) -> list[str]:
    """The command words of a snippet, up to its first option or placeholder."""
    out = []
    for w in snippet.split()[1:]:
        w = w.strip("[]")
        if not w or w.startswith("-") or not re.fullmatch(r"[a-z][a-z0-9|\\-]*", w):
            break
        out.append(w)
    return out


def recipes() -> set[str]:
    listed = subprocess.run(
        [JUST, "--summary"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(listed.split())


JUST_SNIPPETS = documented("just")
RECSYS_SNIPPETS = documented("recsys")


def test_the_readme_documents_commands():
    assert len(JUST_SNIPPETS) >= 15 and len(RECSYS_SNIPPETS) >= 20


@pytest.mark.parametrize("snippet", JUST_SNIPPETS)
def test_each_documented_just_recipe_exists_and_dry_runs(snippet):
    names = words(snippet)
    assert names, snippet
    recipe = names[0]
    assert recipe in recipes(), f"README documents `{snippet}`: no recipe {recipe!r}"
    r = subprocess.run(
        [JUST, "--dry-run", *names], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, (snippet, r.stderr)


def _command(path: list[str]):
    """`recsys PATH --help`."""
    return runner.invoke(app, [*path, "--help"])


def subcommands(name: str) -> set[str]:
    """The subcommands of `recsys NAME` (none for a plain command)."""
    root = typer.main.get_command(app)
    ctx = typer.Context(root)
    _, command, _ = root.resolve_command(ctx, [name])
    return set(command.list_commands(ctx)) if hasattr(command, "list_commands") else set()


@pytest.mark.parametrize("snippet", RECSYS_SNIPPETS)
def test_each_documented_recsys_command_exists_with_its_options(snippet):
    names = words(snippet)
    if not names:  # `recsys COMMAND --help`, `recsys <command>`: placeholders
        return
    head = names[0]
    # `models list|activate V|rollback V|publish`: each alternative a subcommand; a group
    # with none named (`user ID`, its default `show`): the options of any of them
    tokens = re.split(r"[\s|\[\]]+", snippet)[2:]
    subs = [t for t in tokens if t in subcommands(head)]
    paths = [[head, s] for s in subs] or [[head]] + [[head, s] for s in subcommands(head)]
    helps = []
    for path in paths:
        result = _command(path)
        assert result.exit_code == 0, (snippet, path, result.output)
        assert "Usage: recsys " + " ".join(path) in result.output, (snippet, result.output)
        helps.append(result.output)
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", snippet))
    for option in options:
        assert any(option in h for h in helps), f"README: `{snippet}`; {option} is not an option"


def test_each_recsys_command_the_justfile_runs_exists():
    called = re.findall(r"\{\{recsys\}\} ([a-z-]+(?: [a-z-]+)?)", JUSTFILE)
    assert len(called) >= 10
    for words_ in called:
        path = words_.split()
        if len(path) == 2 and path[1] not in subcommands(path[0]):
            path = path[:1]
        result = _command(path)
        assert result.exit_code == 0, (words_, result.output)


def test_just_broker_status_runs_recsys_broker_status():
    r = subprocess.run(
        [JUST, "--dry-run", "broker", "status"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0 and "infra.cli broker status" in r.stderr + r.stdout
