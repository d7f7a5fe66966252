"""hosts: `capq eval worker` and `capq translate worker`, the consuming processes of the evaluation and translation
queues, added to the `eval` and `translate` groups (every consuming process runs workers.consume's runtime)."""

from __future__ import annotations

import typer
from rich.console import Console

from capq.settings import get_settings


def eval_worker(
    concurrency: int = typer.Option(1, min=1, help="Evaluations at once (each uses a CPU and a JVM)."),
    loglevel: str = typer.Option("INFO", help="Log level."),
) -> None:
    """Run the evaluation worker: a Celery worker on the capq.eval queue, fed by celery beat and `eval` tasks."""
    from capq.logs import setup_logging
    from capq.names import EVAL_QUEUE
    from workers.consume import consume

    settings = get_settings()
    setup_logging(settings.log_json)
    # Each evaluation is CPU-bound Python plus a JVM: separate processes, not threads, when running several.
    pool = ["--pool", "solo"] if concurrency == 1 else ["--pool", "prefork", "--concurrency", str(concurrency)]
    consume(settings, "eval", [EVAL_QUEUE], pool, loglevel)


def translate_worker(
    concurrency: int | None = typer.Option(
        None, min=1, help="Translations in flight (threads; providers are I/O); default CAPQ_TRANSLATE_CONCURRENCY."
    ),
    loglevel: str = typer.Option("INFO"),
) -> None:
    """Consume the capq.translate queue: captions of jobs submitted with --translate."""
    from capq.logs import setup_logging
    from capq.names import TRANSLATE_QUEUE
    from workers.consume import consume

    settings = get_settings()
    setup_logging(settings.log_json)
    if not settings.translate_chain:
        Console(stderr=True).print(
            "[yellow]warning:[/yellow] CAPQ_TRANSLATE_PROVIDERS is empty: every translation will be "
            "reported unavailable (captions are not affected)"
        )
    threads = concurrency or settings.translate_concurrency
    consume(settings, "translate", [TRANSLATE_QUEUE], ["--pool", "threads", "--concurrency", str(threads)], loglevel)


def _group(app: typer.Typer, name: str) -> typer.Typer:
    """The command group `name` another package added (capq.cli registers this module after them)."""
    return next(g.typer_instance for g in app.registered_groups if g.name == name)


def register(app: typer.Typer) -> None:
    _group(app, "eval").command("worker")(eval_worker)
    _group(app, "translate").command("worker")(translate_worker)
