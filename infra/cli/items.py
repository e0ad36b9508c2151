"""`recsys items ...`: the live model's items, through the running service's API."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from infra.cli.common import ApiKey, ApiUrl, fail, settings
from infra.cli.remote import CliError, api_client, default_api_url

items_app = typer.Typer(
    help="The live model's items, through the running service: `recsys items similar ID` "
    "lists the items like one item (a read key, or none).\n\n"
    "Example: recsys items similar 50 -k 5",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


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
