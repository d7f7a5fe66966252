"""cli: `capq worker`, `capq beat`, `capq flower`, `capq health`, `capq models ...` and `capq dlq ...`."""

from __future__ import annotations

import json
import os

import typer
from rich.console import Console
from rich.table import Table

from capq.settings import get_settings
from capq.shard import shard_of


def _app():
    # Celery loads only for the commands that use it: every `capq` command imports this module.
    from capq.celery_app import create_app

    return create_app(get_settings())


models_app = typer.Typer(help="Captioning models, checkpoints and generation presets.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: work that kept failing.", no_args_is_help=True)
out = Console()


def worker(
    model: str = typer.Option(..., "--model", help="Model to pin: blip, blip2, git or vit-gpt2."),
    checkpoint: str | None = typer.Option(None, help="Hub id or local folder (default: the model's default)."),
    device: str = typer.Option("cpu", help="cpu or cuda:N (one worker per GPU)."),
    dtype: str = typer.Option("fp32", help="fp32, fp16 or bf16."),
    batch_size: int | None = typer.Option(
        None,
        min=1,
        help="Images per model batch (default CAPQ_BATCH_SIZE; "
        "on a GPU CAPQ_GPU_BATCH_SIZE, or picked from free GPU memory).",
    ),
    concurrency: int = typer.Option(1, min=1, help="Shards in flight sharing the one model (threads)."),
    metrics_port: int | None = typer.Option(
        None, min=0, max=65535, help="Prometheus port (0 = off; default CAPQ_METRICS_PORT)."
    ),
    loglevel: str = typer.Option("INFO", help="Log level."),
) -> None:
    """Run a Celery worker pinned to one model, draining its premium, plus and free queues."""
    from capq.errors import SetupError
    from workers.adapters.base import CheckpointError
    from workers.runtime import run_worker

    settings = get_settings()
    try:
        run_worker(
            settings,
            model,
            checkpoint,
            device,
            dtype,
            batch_size,
            concurrency,
            settings.metrics_port if metrics_port is None else metrics_port,
            loglevel,
        )
    except (SetupError, CheckpointError) as exc:  # unknown model, bad device/dtype, broken checkpoint (not bugs)
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def beat(loglevel: str = typer.Option("INFO")) -> None:
    """Run celery beat (exactly one per deployment): schedules the periodic evaluation."""
    app = _app()
    schedule = get_settings().home / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    app.Beat(loglevel=loglevel, schedule=str(schedule)).run()


def flower(address: str = typer.Option("127.0.0.1"), port: int = typer.Option(5555)) -> None:
    """Run Flower for operators; refuses to start without FLOWER_BASIC_AUTH=user:password."""
    user, _, password = os.environ.get("FLOWER_BASIC_AUTH", "").partition(":")
    if not user.strip() or not password.strip() or "change-me" in password:
        Console(stderr=True).print(
            "[red]error:[/red] set FLOWER_BASIC_AUTH=user:password with a real password (not "
            "empty, not the .env.example placeholder); Flower never runs open"
        )
        raise typer.Exit(2)
    from workers.flower_queues import install

    app = _app()
    install()  # issue 18: every queue shown, with or without a worker online
    # Flower reads FLOWER_BASIC_AUTH itself; passing it as a flag would show the password in `ps`.
    app.start(["flower", f"--address={address}", f"--port={port}"])


def health(service: str = typer.Option("api", help="api, worker or beat: what this process is.")) -> None:
    """Exit 0 when Redis, MongoDB and S3 answer (and, for a worker, this host has a live heartbeat)."""
    import redis

    from capq.names import heartbeat_key, worker_id
    from storage.blobs import ImageStore
    from storage.db import Mongo

    settings = get_settings()
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=settings.connect_timeout_s)
        client.ping()
        Mongo(settings).ping()
        ImageStore(settings).ensure_bucket()
        if service == "worker" and not list(client.scan_iter(heartbeat_key(worker_id("*", "*")))):
            raise RuntimeError("no live worker heartbeat on this host")
    except Exception as exc:
        from capq.redact import redact

        Console(stderr=True).print(f"unhealthy: {redact(exc)}", markup=False)
        raise typer.Exit(1) from None
    out.print("ok")


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Models, their checkpoints and generation presets."""
    from capq.catalog import describe_models

    rows = describe_models()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("model", "default checkpoint", "other checkpoints", "presets")
    for r in rows:
        table.add_row(r["model"], r["default_checkpoint"], ", ".join(r["other_checkpoints"]), ", ".join(r["presets"]))
    out.print(table)


@dlq_app.command("list")
def dlq_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Dead letters with their errors, oldest first."""
    from workers.deadletters import DeadLetters

    entries = DeadLetters(get_settings()).list()
    if as_json:
        for e in entries:
            print(json.dumps(e))
        return
    table = Table("id", "queue", "job", "images", "retries", "error")
    for e in entries:
        shard = shard_of(e["args"])
        table.add_row(
            e["id"],
            e["queue"],
            shard.job_id if shard else "?",
            str(len(shard.shas)) if shard else "?",
            str(e["retries"]),
            e["error"],
        )
    out.print(table if entries else "no dead letters")


@dlq_app.command("retry")
def dlq_retry(
    ids: list[str] | None = typer.Argument(None, help="Entry ids (default: all)."),
    all_: bool = typer.Option(False, "--all", help="Re-queue every dead letter."),
) -> None:
    """Re-queue dead letters on their original queues."""
    from workers.deadletters import DeadLetters

    if not ids and not all_:
        Console(stderr=True).print("[red]error:[/red] name entry ids (see `capq dlq list`) or pass --all")
        raise typer.Exit(2)
    try:
        sent = DeadLetters(get_settings()).retry(_app(), ids or None)
    except KeyError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc.args[0]}")
        raise typer.Exit(2) from None
    out.print(f"re-queued {len(sent)} dead letter(s)")


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.command("beat")(beat)
    app.command("flower")(flower)
    app.command("health")(health)
    app.add_typer(models_app, name="models")
    app.add_typer(dlq_app, name="dlq")
