"""cli: `capq ui`, which serves the Streamlit app (ui/app.py) against a capq API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

APP = Path(__file__).resolve().parent / "app.py"


def ui_cmd(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8501, min=1, max=65535, help="Port to listen on."),
    api: str | None = typer.Option(None, help="The capq API's URL (default CAPQ_UI_API_URL)."),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="CAPQ_UI_API_KEY",
        show_envvar=False,
        help="Key the UI starts with (default CAPQ_UI_API_KEY; a user can also paste one in the sidebar).",
    ),
) -> None:
    """Serve the web UI: caption images, follow jobs, browse history, evaluations and queues."""
    import importlib.util

    from capq.settings import get_settings

    if importlib.util.find_spec("streamlit") is None:
        typer.echo(
            "error: streamlit is not installed here; the UI has its own image (deploy/Dockerfile.ui), or "
            "pip install -r deploy/requirements-ui.txt",
            err=True,
        )
        raise typer.Exit(2)
    settings = get_settings()
    env = {**os.environ, "CAPQ_UI_API_URL": api or settings.ui_api_url}
    if api_key:
        env["CAPQ_UI_API_KEY"] = api_key
    args = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]
    typer.echo(f"capq UI on http://{host}:{port} (API {env['CAPQ_UI_API_URL']})", err=True)
    try:
        raise typer.Exit(subprocess.call(args, env=env))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def register(app: typer.Typer) -> None:
    app.command("ui")(ui_cmd)
