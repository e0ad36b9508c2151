"""`recsys items ...`: the live catalogue through the running service's API: the items
like one item (`similar`), and catalogue writes (`add`, `update`, `remove`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from client import RecsysClient
from infra.cli.common import ApiKey, ApiUrl, fail, settings
from infra.cli.remote import CliError, api_client, default_api_url

WRITE_TIMEOUT_SECONDS = 30.0
"""A write returns once Kafka acknowledged it (a batch of 1,000 within a second or two;
up to ~6 s when Kafka is slow)."""

items_app = typer.Typer(
    help="The live catalogue, through the running service: `recsys items similar ID` "
    "lists the items like one item (a read key, or none); `add`, `update ID`, `remove ID` "
    "write the catalogue (a write or admin key): the dataflow embeds each new or changed "
    "item with the live model and serves it within moments.\n\n"
    "Example: recsys items similar 50 -k 5",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

Title = Annotated[str | None, typer.Option(help="The item's title.", show_default=False)]
Description = Annotated[
    str | None, typer.Option(help="What the item is about (read by the text encoder).")
]
Categories = Annotated[
    list[str] | None,
    typer.Option("--category", "-c", help="A category (repeatable; replaces the item's list)."),
]
Attrs = Annotated[
    list[str] | None,
    typer.Option(
        "--attr",
        help="An attribute KEY=VALUE (repeatable; VALUE is read as a number or true/false "
        "when it is one; replaces the item's attributes).",
        show_default=False,
    ),
]
Available = Annotated[
    bool | None,
    typer.Option(
        "--available/--unavailable",
        help="Whether the item may be recommended (default for a new item: available).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]


@items_app.command("similar")
def items_similar(
    item_id: Annotated[str, typer.Argument(help="The item's id.")],
    k: Annotated[int, typer.Option("-k", min=1, help="How many items.")] = 10,
    category: Annotated[
        list[str] | None,
        typer.Option("--category", "-c", help="Only items in one of these (repeatable)."),
    ] = None,
    exclude_category: Annotated[
        list[str] | None,
        typer.Option("--exclude-category", "-x", help="No items in these (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Items similar to one item (GET /items/{id}/similar): nearest by the live model's
    item vectors, blended with the items picked right before or after it in training,
    each with its reason.

    Example: recsys items similar 50 -k 5 --category Sci-Fi
    """
    url = api_url or default_api_url(settings())
    try:
        with api_client(url, api_key, "read") as client:
            found = client.similar(
                item_id, k, categories=category or (), exclude_categories=exclude_category or ()
            ).model_dump(mode="json")
    except CliError as e:
        raise fail(str(e)) from None
    typer.echo(json.dumps(found, indent=2) if as_json else format_similar(found))


def format_similar(found: dict[str, Any]) -> str:
    """GET /items/{id}/similar for people: one line per item, with score and reason."""
    lines = [f"items like {found['title']} ({found['item_id']}), model {found['model_version']}:"]
    for n, it in enumerate(found["items"], 1):
        lines.append(
            f"  {n:>2}. {it['title'][:40]:<40} {it['item_id']:<10} {it['score']:.3f}  "
            f"{it['reason']}"
        )
    if not found["items"]:
        lines.append("  (none: the filters leave no other item)")
    return "\n".join(lines)


# --- catalogue writes -----------------------------------------------------------------------


@items_app.command("add")
def items_add(
    item_id: Annotated[
        str | None, typer.Argument(help="The new item's id (or use --file).", show_default=False)
    ] = None,
    title: Title = None,
    description: Description = None,
    category: Categories = None,
    attr: Attrs = None,
    available: Available = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="A JSON-lines file, one POST /items item per line; sent in batches of "
            "up to 1,000 after every line was checked.",
            show_default=False,
        ),
    ] = None,
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Add items to the catalogue, or replace them whole (POST /items; write key).

    The dataflow embeds each item (its title, description and categories) with the live
    model's item tower and serves it within moments; no retraining.

    Examples:

      recsys items add m-1 --title "Heat" --description "A heist in LA." -c Crime --attr year=1995

      recsys items add --file items.jsonl
    """
    if (file is None) == (item_id is None):
        raise fail("give an item id with --title ..., or --file FILE (one of them)", 2)
    url = api_url or default_api_url(settings())
    if file is not None:
        if title or description or category or attr or available is not None:
            raise fail("--file takes no item options (the file holds the items)", 2)
        _add_file(file, url, api_key, as_json)
        return
    assert item_id is not None
    item = {"item_id": item_id, **_fields(title, description, category, attr, available)}
    _write(url, api_key, as_json, lambda client: client.add_items(item).model_dump())


@items_app.command("update")
def items_update(
    item_id: Annotated[str, typer.Argument(help="The item's id.")],
    title: Title = None,
    description: Description = None,
    category: Categories = None,
    attr: Attrs = None,
    available: Available = None,
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Change some fields of an item (PATCH /items/{id}; write key): only the options
    given are sent, the other fields stay. --category and --attr replace the whole list.

    Example: recsys items update m-1 --unavailable
    """
    fields = _fields(title, description, category, attr, available)
    if not fields:
        raise fail(
            "nothing to change: give --title, --description, --category, --attr, "
            "--available or --unavailable",
            2,
        )
    url = api_url or default_api_url(settings())
    _write(url, api_key, as_json, lambda c: c.update_item(item_id, **fields).model_dump())


@items_app.command("remove")
def items_remove(
    item_id: Annotated[str, typer.Argument(help="The item's id.")],
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Take an item out of recommendations (DELETE /items/{id}; write key). It stays in
    the catalogue, unavailable (users' histories point at it); `recsys items update ID
    --available` brings it back.

    Example: recsys items remove m-1
    """
    url = api_url or default_api_url(settings())
    _write(url, api_key, as_json, lambda client: client.remove_item(item_id).model_dump())


def _fields(
    title: str | None,
    description: str | None,
    categories: list[str] | None,
    attrs: list[str] | None,
    available: bool | None,
) -> dict[str, Any]:
    """The item fields the options give (left-out options are left out)."""
    given: dict[str, Any] = {
        "title": title,
        "description": description,
        "categories": categories or None,
        "attributes": parse_attrs(attrs) if attrs else None,
        "available": available,
    }
    return {k: v for k, v in given.items() if v is not None}


def parse_attrs(values: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` options as attributes; a VALUE that is a JSON number or boolean is
    that, anything else the string as given."""
    out: dict[str, Any] = {}
    for kv in values:
        key, sep, raw = kv.partition("=")
        if not sep or not key:
            raise fail(f"--attr {kv!r}: expected KEY=VALUE", 2)
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out[key] = value if isinstance(value, int | float | bool) else raw
    return out


def _write(
    url: str, api_key: str | None, as_json: bool, call: Callable[[RecsysClient], dict[str, Any]]
) -> None:
    try:
        with api_client(url, api_key, "write", timeout=WRITE_TIMEOUT_SECONDS) as client:
            done = call(client)
    except CliError as e:
        raise fail(str(e), _exit_code(e)) from None
    typer.echo(json.dumps(done, indent=2) if as_json else format_accepted(done))


def _exit_code(e: CliError) -> int:
    """2 when the API refused the request (4xx: fix the input or the key), 1 otherwise."""
    return 2 if 400 <= e.status < 500 else 1


def format_accepted(done: dict[str, Any]) -> str:
    ids = done["item_ids"]
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    return (
        f"accepted {done['accepted']} item write(s): {shown}; the dataflow applies them to "
        "the live catalogue within moments"
    )


def _add_file(path: Path, url: str, api_key: str | None, as_json: bool) -> None:
    """Every line checked first (nothing is sent if one is invalid), then the items in
    batches, with progress on stderr."""
    from core.progress import Progress
    from infra.cli.item_files import read_items  # the contract loads numpy: only when run

    try:
        batches = read_items(path)
    except ValueError as e:
        raise fail(str(e), 2) from None
    total = sum(len(b) for b in batches)
    sent: list[str] = []
    try:
        with (
            api_client(url, api_key, "write", timeout=WRITE_TIMEOUT_SECONDS) as client,
            Progress(total, "items", "items", quiet=len(batches) < 2) as bar,
        ):
            for batch in batches:
                sent += _post(client, batch)
                bar.update(len(batch))
    except CliError as e:
        before = f" ({len(sent)} of {total} sent before it; sending the file again is safe)"
        raise fail(f"{e}{before if sent else ''}", _exit_code(e)) from None
    done = {"accepted": len(sent), "item_ids": sent}
    typer.echo(json.dumps(done, indent=2) if as_json else format_accepted(done))


def _post(client: RecsysClient, batch: list[dict[str, Any]]) -> list[str]:
    return client.add_items(batch).item_ids
