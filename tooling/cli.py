"""cli: `capq stack up|down|status`, `capq demo` and `capq models make-tiny`, added to capq by register()."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from capq.settings import get_settings

stack_app = typer.Typer(
    help="Local Redis, MongoDB wire server and S3 server for development, tests and the demo.", no_args_is_help=True
)
out = Console()


def _fail(exc: Exception, code: int = 1) -> None:
    from producer.render import fail

    fail(exc)
    raise typer.Exit(code)


@stack_app.command("up")
def stack_up() -> None:
    """Start the local services (idempotent) and wait until each answers."""
    from tooling import stack

    settings = get_settings()
    table = Table("service", "state", "url")
    try:
        stack.up(settings, lambda name, state, url: table.add_row(name, state, url))
    except stack.StackError as exc:
        _fail(exc)
    table.caption = f"data and logs under {settings.stack_dir.resolve()}"
    out.print(table)


@stack_app.command("down")
def stack_down() -> None:
    """Stop the local services capq started."""
    from tooling import stack

    stack.down(get_settings(), lambda name, state, url: out.print(f"{name}: {state}"))


@stack_app.command("status")
def stack_status() -> None:
    """Show whether each local service answers; exit 1 if any does not."""
    from tooling import stack

    rows = stack.status(get_settings())
    table = Table("service", "state", "url", "log")
    for row in rows:
        table.add_row(*row)
    out.print(table)
    if any(not state.startswith("running") for _, state, _, _ in rows):
        raise typer.Exit(1)


def demo_cmd(
    models: str = typer.Option("blip,blip2,git,vit-gpt2", help="Models to run, comma-separated."),
    checkpoint: list[str] | None = typer.Option(
        None, help="MODEL=HUB_ID_OR_DIR (repeatable); default: tiny offline models"
    ),
    device: str = typer.Option("cpu", help="cpu or cuda:N for the workers."),
    no_api: bool = typer.Option(False, "--no-api", help="Submit directly instead of over HTTP."),
    timeout_s: float = typer.Option(600, help="Give up waiting for captions after this long."),
    keep_running: bool = typer.Option(
        False,
        "--keep-running",
        help="Then leave the stack, workers, API and web UI running and print the UI's URL (Ctrl-C stops them).",
    ),
    ui_host: str = typer.Option("127.0.0.1", "--ui-host", help="With --keep-running: the UI's address."),
    ui_port: int = typer.Option(8501, "--ui-port", min=1, max=65535, help="With --keep-running: the UI's port."),
) -> None:
    """The main job end to end: stack, models, workers, API, submit the seed images, print captions."""
    import httpx
    from kombu.exceptions import OperationalError

    from producer.errors import BadInput
    from storage.errors import NotFound, StorageError
    from tooling.demo import run_demo
    from tooling.procs import ProcessError
    from tooling.stack import StackError

    try:
        code = run_demo(
            get_settings(), models, checkpoint or [], device, not no_api, timeout_s, keep_running, ui_host, ui_port
        )
    except (BadInput, NotFound) as exc:  # input the caller must fix
        _fail(exc, 2)
    except (ProcessError, StackError, StorageError, OperationalError, httpx.HTTPError) as exc:
        _fail(exc)
    raise typer.Exit(code)


def models_make_tiny(
    directory: Path = typer.Argument(..., help="Folder to build DIR/blip, DIR/blip2, DIR/git, DIR/vit-gpt2 in."),
) -> None:
    """Build tiny, randomly initialised models of all four architectures, offline."""
    from tooling.tiny import make_tiny

    for name, path in make_tiny(directory).items():
        out.print(f"{name}: {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(stack_app, name="stack")
    app.command("demo")(demo_cmd)
    # `capq models` is the workers' group (registered before this one): the tiny builder joins it.
    models = next((g.typer_instance for g in app.registered_groups if g.name == "models"), None)
    if models is None:
        models = typer.Typer(help="Captioning models, checkpoints and generation presets.", no_args_is_help=True)
        app.add_typer(models, name="models")
    models.command("make-tiny")(models_make_tiny)
