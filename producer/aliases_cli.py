"""aliases_cli: `capq aliases set|list|rm`: model aliases with weights for gradual rollout."""

from __future__ import annotations

import json
import os

import typer
from rich.table import Table

from capq.settings import get_settings

aliases_app = typer.Typer(
    help="Model aliases with weights (gradual rollout): submit to an alias instead of a "
    "model; each image goes to one of its models, chosen by its sha256.",
    no_args_is_help=True,
)


def _arms_text(arms: list[dict]) -> str:
    return ", ".join(f"{a['model']}:{a['weight']}" for a in arms)


@aliases_app.command("set")
def aliases_set(
    name: str = typer.Argument(..., help="Alias name, e.g. caption-default."),
    arms: list[str] = typer.Argument(..., help="MODEL:WEIGHT pairs, e.g. blip:90 git:10 (or 'blip:90,git:10')."),
) -> None:
    """Create an alias or change its weights; the next submission uses them (nothing restarts)."""
    from producer.aliases import check_alias_name, parse_arms
    from producer.errors import BadInput
    from producer.render import fail, out
    from storage.aliases import AliasStore

    try:
        parsed = parse_arms(arms)
        AliasStore(get_settings()).set(check_alias_name(name), parsed, os.environ.get("USER") or "local")
    except BadInput as exc:
        fail(exc)
        raise typer.Exit(2) from None
    out.print(f"{name} = {_arms_text(parsed)}", highlight=False)


@aliases_app.command("list")
def aliases_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Aliases and their weights."""
    from producer.render import out
    from storage.aliases import AliasStore

    rows = AliasStore(get_settings()).list()
    if as_json:
        for r in rows:
            print(json.dumps(r, default=str))
        return
    table = Table("alias", "models:weights", "updated", "by")
    for r in rows:
        table.add_row(r["name"], _arms_text(r["arms"]), str(r["updated_at"])[:19], r.get("updated_by") or "")
    out.print(table if rows else "no aliases")


@aliases_app.command("rm")
def aliases_rm(name: str = typer.Argument(..., help="Alias to delete.")) -> None:
    """Delete an alias (submissions naming it are then refused; jobs already submitted keep their models)."""
    from producer.render import fail, out
    from storage.aliases import AliasStore

    if not AliasStore(get_settings()).delete(name):
        fail(f"no alias {name!r}; `capq aliases list` shows them")
        raise typer.Exit(2)
    out.print(f"alias {name} deleted")


def register(app: typer.Typer) -> None:
    app.add_typer(aliases_app, name="aliases")
