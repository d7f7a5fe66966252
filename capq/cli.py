"""cli: the `capq` command; each package adds its own commands through a `register(app)` hook."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from capq.errors import CapqError, InputError
from capq.settings import SettingsError

app = typer.Typer(
    help="capq: distributed batch image captioning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
# Repository tooling (tooling/): the runtime images do not ship it, so these commands say where they run instead.
TOOLING_COMMANDS = ("stack", "demo", "models make-tiny")


def _register_packages() -> None:
    import importlib

    for name in (
        "workers.cli",
        "producer.cli",
        "evaluation.cli",
        "producer.cli_export",
        "translation.cli",
        "workers.hosts",  # adds `worker` to the eval and translate groups above
        "ui.cli",
        "tooling.cli",
    ):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name not in (name, "tooling"):
                raise
            if name == "tooling.cli":
                _tooling_missing()
            continue
        module.register(app)


def _tooling_missing() -> None:
    def missing(ctx: typer.Context) -> None:
        console.print(
            f"[red]error:[/red] `{ctx.command_path}` is repository tooling, not part of this installation: "
            "run it from a checkout of capq (make setup installs it; then .venv/bin/capq)",
            soft_wrap=True,
        )
        raise typer.Exit(2)

    takes_anything = {"allow_extra_args": True, "ignore_unknown_options": True}
    for command in TOOLING_COMMANDS:
        *group, name = command.split()
        parent = next((g.typer_instance for g in app.registered_groups if [g.name] == group), None) if group else app
        if parent is not None:
            parent.command(name, context_settings=takes_anything, help="Repository tooling: run from a checkout.")(
                missing
            )


_register_packages()


def main() -> None:
    try:
        app()
    except SettingsError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    except CapqError as exc:  # a deliberate error no command handled: storage's (a service down, a thing missing)
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(2 if isinstance(exc, InputError) else 1)
