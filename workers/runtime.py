"""runtime: start a worker process: load its one model, export metrics, then hand over to Celery."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from celery import Celery
from prometheus_client import start_http_server

from capq.celery_app import create_app
from capq.errors import SetupError
from capq.imaging import decode_budget
from capq.logs import setup_logging
from capq.names import caption_queues
from capq.presets import get_preset
from capq.settings import Settings
from storage.blobs import ImageStore
from storage.captions import CaptionStore
from storage.history import CaptionHistory
from storage.jobs import JobStore
from storage.usage import UsageStore
from workers import metrics
from workers.consume import consume, worker_id
from workers.pipeline import Worker

log = logging.getLogger("capq.worker")
_APP_ATTR = "capq_worker"


def attach(app: Celery, worker: Worker) -> None:
    """Hand `worker` (its loaded model) to the Celery app that runs the caption task: the task reads it back from
    its own app (worker_of(self.app)), so no process-wide global holds it."""
    setattr(app, _APP_ATTR, worker)


def worker_of(app: Celery) -> Worker:
    """The Worker attached to `app`; RuntimeError in a process that loaded no model."""
    worker = getattr(app, _APP_ATTR, None)
    if worker is None:
        raise RuntimeError("no model loaded in this process; start workers with `capq worker --model NAME`")
    return worker


def checkpoint_identity(checkpoint: str) -> str:
    """A local folder is recorded by absolute path, a hub id as given: part of every caption's key."""
    path = Path(checkpoint).expanduser()
    return str(path.resolve()) if path.exists() else checkpoint


def build_worker(
    settings: Settings, model: str, checkpoint: str | None, device: str, dtype: str, batch_size: int | None
) -> Worker:
    """Load the model once, in this process (never in a parent that forks: CUDA and fork do not mix).

    `batch_size` None: CAPQ_BATCH_SIZE on a CPU; on a GPU CAPQ_GPU_BATCH_SIZE, or if that is 0 the size
    workers.batch_size picks from the model and the free GPU memory.
    """
    from workers.models import MODELS, load_captioner

    if model not in MODELS:
        raise SetupError(f"unknown model {model!r}; models are {', '.join(MODELS)}")
    checkpoint = checkpoint or MODELS[model].default_checkpoint
    on_gpu = device.startswith("cuda")
    if batch_size is None:
        batch_size = (settings.gpu_batch_size if on_gpu else settings.batch_size) or None
    t0 = time.perf_counter()
    captioner = load_captioner(
        model, checkpoint, device=device, dtype=dtype, max_batch_size=batch_size or settings.batch_size
    )
    metrics.MODEL_LOAD.labels(model).set(time.perf_counter() - t0)
    if batch_size is None:
        from workers.batch_size import auto_batch_size

        batch_size = captioner.max_batch_size = auto_batch_size(captioner, get_preset(model, settings.default_preset))
    log.info("worker for %s on %s: batch size %d", model, device, batch_size)
    metrics.WORKER_BATCH_SIZE.labels(model).set(batch_size)

    def on_batch(size: int, model_s: float) -> None:
        metrics.BATCH_SIZE.labels(model).observe(size)
        metrics.MODEL_LATENCY.labels(model).observe(model_s)

    return Worker(
        model=model,
        checkpoint=checkpoint_identity(checkpoint),
        captioner=captioner,
        images=ImageStore(settings),
        captions=CaptionStore(settings),
        jobs=JobStore(settings),
        worker_id=worker_id(model),
        batch_size=batch_size,
        max_pixels=settings.max_image_pixels,
        fetch_threads=settings.fetch_threads,
        on_batch=on_batch,
        on_failure=lambda reason: metrics.FAILURES.labels(model, reason).inc(),
        decode_budget=decode_budget(settings.decode_budget_pixels),
        max_side_px=settings.worker_decode_max_side_px,
        history=CaptionHistory(settings),
        usage=UsageStore(settings),
        device=device.split(":")[0],
    )


def run_worker(
    settings: Settings,
    model: str,
    checkpoint: str | None,
    device: str,
    dtype: str,
    batch_size: int,
    concurrency: int,
    metrics_port: int,
    loglevel: str = "INFO",
) -> None:
    setup_logging(settings.log_json, secrets=(settings.s3_secret_key,))
    serve(
        settings,
        build_worker(settings, model, checkpoint, device, dtype, batch_size),
        concurrency,
        metrics_port,
        loglevel,
    )


def serve(
    settings: Settings, worker: Worker, concurrency: int = 1, metrics_port: int = 0, loglevel: str = "INFO"
) -> None:
    """Consume the worker's model queues in this process until shut down."""
    app = create_app(settings)
    attach(app, worker)
    if metrics_port:
        start_http_server(metrics_port, addr="0.0.0.0")
    # solo: the model lives in this very process; threads share it when more than one shard may run at once.
    pool = ["--pool", "solo"] if concurrency == 1 else ["--pool", "threads", "--concurrency", str(concurrency)]
    consume(
        settings,
        worker.model,
        caption_queues(worker.model),
        pool,
        loglevel,
        details={"batch_size": worker.batch_size, "device": getattr(worker.captioner, "device", None)},
        app=app,
    )


def fault_hook(shas: list[str]) -> None:
    """Issue 11, tests only: a worker that dies (SIGKILL, as an OOM kill or a decoder's segfault would) when a
    batch holds an image named in CAPQ_TEST_KILL_ON_SHA256. Only the poison test sets it."""
    marked = os.environ.get("CAPQ_TEST_KILL_ON_SHA256")
    if marked and marked in shas:
        os.kill(os.getpid(), signal.SIGKILL)
