"""ops_cli: `capq exporter`, the one per-deployment Prometheus exporter of queues, workers and scores."""
from __future__ import annotations

from typing import Optional

import typer

from capq.settings import get_settings


def exporter(port: Optional[int] = typer.Option(None, min=1, max=65535, help="Port (default CAPQ_EXPORTER_PORT)."),
             address: str = typer.Option("0.0.0.0", help="Address to listen on.")) -> None:
    """Serve queue depth and oldest-item age per model and tier, workers online, dead letters and the newest
    evaluation scores on /metrics. Run exactly one per deployment (the values are global)."""
    from capq.logs import setup_logging
    from workers.queue_metrics import serve_exporter

    settings = get_settings()
    setup_logging(settings.log_json)
    serve_exporter(settings, port or settings.exporter_port, address)


def register(app: typer.Typer) -> None:
    app.command("exporter")(exporter)
