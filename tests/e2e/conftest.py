"""e2e fixtures: tiny models, real worker processes, and jobs put straight into the stores."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from capq.celery_app import create_app
from capq.enqueue import enqueue_pending
from capq.settings import Settings, load_settings
from storage.blobs import ImageStore, sha256_hex
from storage.jobs import JobStore
from tests.conftest import flush_redis, settings_env
from tooling import workers as harness
from tooling.images import random_images  # noqa: F401 (re-exported: tests import it from here)
from tooling.paths import LOG_DIR, TINY_DIR  # noqa: F401 (re-exported: tests import them from here)


@pytest.fixture(scope="session")
def tiny_models() -> Path:
    """Tiny models of all four architectures, built offline once and reused across runs."""
    from tooling.tiny import make_tiny

    make_tiny(TINY_DIR)
    return TINY_DIR


@pytest.fixture
def clean_redis(settings):
    """Each e2e test starts with empty queues and no dead letters from the one before."""
    flush_redis(settings)
    yield
    flush_redis(settings)


class Workers(harness.Workers):
    """Starts `capq worker` subprocesses on this session's settings and always stops them."""

    def __init__(self, settings: Settings, models_dir: Path):
        super().__init__({**settings_env(settings), "CAPQ_LOG_JSON": "false"}, models_dir, LOG_DIR)
        self.settings = settings


@pytest.fixture
def workers(settings, tiny_models, clean_redis):
    w = Workers(settings, tiny_models)
    yield w
    w.stop_all()


def make_job(
    settings: Settings,
    images: list[tuple[str, bytes]],
    model: str,
    tier: str = "free",
    preset: str = "default",
    shard_size: int | None = None,
    upload: bool = True,
) -> str:
    """Record and enqueue a job the way the producer does, minus validation (so bad bytes reach workers)."""
    store, jobs = ImageStore(settings), JobStore(settings)
    job, _ = jobs.create("test", tier, [model], preset)
    items = []
    for name, data in images:
        sha = store.put(data)[0] if upload else sha256_hex(data)
        items.append({"sha256": sha, "model": model, "preset": preset, "file_name": name})
    jobs.add_items(job["_id"], "test", items)
    jobs.set_state(job["_id"], "queued")
    enqueue_pending(
        create_app(settings), jobs, job["_id"], tier, shard_size or settings.batch_size * settings.shard_batches
    )
    return job["_id"]


def wait_job(
    settings: Settings, job_id: str, timeout_s: float = 300, poll_s: float = 0.3, recount: bool = True
) -> dict:
    """Poll until the job has nothing queued. The timeout only stops a hung test; it is no speed check.

    Each poll recounts, which closes a finished job; with recount=False it only reads the job document, so
    only the workers can close the job (see wait_job_closed)."""
    jobs = JobStore(settings)
    read = jobs.refresh_counts if recount else jobs.get
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = read(job_id)
        if job["state"] in ("done", "cancelled"):
            return job
        time.sleep(poll_s)
    raise AssertionError(f"job {job_id} did not finish (state {jobs.get(job_id)['state']}): {jobs.counts(job_id)}")


def wait_job_closed(settings: Settings, job_id: str, timeout_s: float = 300) -> dict:
    """Wait for the workers to close the job themselves: a worker that leaves its job open fails the test."""
    return wait_job(settings, job_id, timeout_s, recount=False)


def env_settings(settings: Settings, **overrides) -> tuple[Settings, dict]:
    env = {**settings_env(settings), **{f"CAPQ_{k.upper()}": str(v) for k, v in overrides.items()}}
    return load_settings(env), env
