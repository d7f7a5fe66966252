"""capacity_cli: `capq capacity`, per model the workers needed for a target queue age and the time to drain the
backlog."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from capq.settings import get_settings


def _duration(s: float | None) -> str:
    if s is None:
        return "never"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def capacity_cmd(
    model: str | None = typer.Option(None, help="Only this model (default: every model)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Per model: measured images/s of one worker, images arriving per second, backlog, and the workers needed to
    take every queued image within CAPQ_CAPACITY_TARGET_AGE_S (at most CAPQ_CAPACITY_MAX_UTILIZATION busy), with
    the time to drain the backlog now and with that many workers."""
    from capq.capacity import plan
    from storage.throughput import Throughput

    settings = get_settings()
    result = plan(settings, Throughput(settings).arrivals, [model] if model else None)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(
        "model",
        "online",
        "img/s per worker",
        "arriving img/s",
        "backlog",
        "oldest",
        "needed",
        "drain now",
        "drain with needed",
        title=f"capacity for a target age of {result['target_age_s']:g} s "
        f"(arrivals over {result['arrival_window_s']} s)",
    )
    for r in result["models"]:
        measured = r["per_worker_images_per_s"] is not None
        table.add_row(
            r["model"],
            str(r["workers_online"]),
            f"{r['per_worker_images_per_s']:.2f}" if measured else "-",
            f"{r['arrival_images_per_s']:.3f}",
            str(r["backlog_images"]),
            _duration(r["oldest_age_s"]),
            "?" if r["workers_needed"] is None else str(r["workers_needed"]),
            _duration(r["drain_s"]) if measured or r["workers_needed"] == 0 else "?",
            _duration(r["drain_s_with_needed"]) if measured or r["workers_needed"] == 0 else "?",
        )
    Console().print(table)
    for r in result["models"]:
        if r.get("reason"):
            Console(stderr=True).print(f"{r['model']}: {r['reason']}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("capacity")(capacity_cmd)
