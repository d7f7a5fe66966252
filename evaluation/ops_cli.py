"""ops_cli: `capq exporter`, the one per-deployment Prometheus exporter of queues, workers and scores."""

from __future__ import annotations

import logging
import time

import typer

from capq.logs import setup_logging
from capq.settings import Settings, get_settings

log = logging.getLogger("capq.exporter")


def serve_exporter(settings: Settings, port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics with the core's queue collector, evaluation's newest scores and the capacity plan until killed."""
    # Here, not at the top: every `capq` command imports this module (through evaluation.cli).
    from prometheus_client import REGISTRY, start_http_server

    from capq.capacity import CapacityCollector
    from capq.queue_metrics import QueueCollector
    from evaluation.score_metrics import score_families
    from storage.throughput import Throughput

    REGISTRY.register(QueueCollector(settings, lambda: score_families(settings)))
    # Issue 18: capacity planning gauges. MongoDB is reached at scrape time, where the collector answers without it.
    REGISTRY.register(
        CapacityCollector(settings, lambda models, window_s: Throughput(settings).arrivals(models, window_s))
    )
    start_http_server(port, addr=addr)
    log.info("exporter on :%s/metrics", port)
    while True:
        time.sleep(3600)


def exporter(
    port: int | None = typer.Option(None, min=1, max=65535, help="Port (default CAPQ_EXPORTER_PORT)."),
    address: str = typer.Option("0.0.0.0", help="Address to listen on."),
) -> None:
    """Serve queue depth and oldest-item age per model and tier, workers online, dead letters and the newest
    evaluation scores on /metrics. Run exactly one per deployment (the values are global)."""
    settings = get_settings()
    setup_logging(settings.log_json)
    serve_exporter(settings, port or settings.exporter_port, address)


def register(app: typer.Typer) -> None:
    app.command("exporter")(exporter)
