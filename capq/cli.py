"""cli: the `capq` command; each package adds its own commands through a `register(app)` hook."""
from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.table import Table

from capq import stack as local_stack
from capq.settings import SettingsError, get_settings

app = typer.Typer(help="capq: distributed batch image captioning.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
stack_app = typer.Typer(help="Local Redis, MongoDB wire server and S3 server for development, tests and the demo.",
                        no_args_is_help=True)
app.add_typer(stack_app, name="stack")
console = Console(stderr=True)


@stack_app.command("up")
def stack_up() -> None:
    """Start the local services (idempotent) and wait until each answers."""
    settings = get_settings()
    table = Table("service", "state", "url")
    local_stack.up(settings, lambda name, state, url: table.add_row(name, state, url))
    table.caption = f"data and logs under {settings.stack_dir.resolve()}"
    Console().print(table)


@stack_app.command("down")
def stack_down() -> None:
    """Stop the local services capq started."""
    local_stack.down(get_settings(), lambda name, state, url: Console().print(f"{name}: {state}"))


@stack_app.command("status")
def stack_status() -> None:
    """Show whether each local service answers; exit 1 if any does not."""
    rows = local_stack.status(get_settings())
    table = Table("service", "state", "url", "log")
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    if any(not state.startswith("running") for _, state, _, _ in rows):
        raise typer.Exit(1)


def _register_packages() -> None:
    import importlib

    for name in ("workers.cli", "producer.cli", "evaluation.cli", "producer.cli_export", "translation.cli", "ui.cli"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(app)


_register_packages()


def main() -> None:
    from storage.errors import StorageError

    try:
        app()
    except SettingsError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    except (StorageError, local_stack.StackError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
