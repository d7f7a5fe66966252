"""e2e fixtures: tiny models, real worker processes, and jobs put straight into the stores."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from capq.names import heartbeat_key, worker_id
from capq.sample_images import random_images  # re-exported: tests import it from here
from capq.settings import Settings, load_settings
from capq.enqueue import enqueue_pending
from storage.blobs import ImageStore, sha256_hex
from storage.jobs import JobStore
from tests.conftest import REPO, flush_redis, settings_env
from capq.celery_app import create_app

LOG_DIR = REPO / ".capq" / "test-logs"
TINY_DIR = Path(os.environ.get("CAPQ_TEST_MODELS", REPO / ".capq" / "test-models"))


@pytest.fixture(scope="session")
def tiny_models() -> Path:
    """Tiny models of all four architectures, built offline once and reused across runs."""
    from workers.tiny import make_tiny

    make_tiny(TINY_DIR)
    return TINY_DIR


@pytest.fixture
def clean_redis(settings):
    """Each e2e test starts with empty queues and no dead letters from the one before."""
    flush_redis(settings)
    yield
    flush_redis(settings)


class Workers:
    """Starts `capq worker` subprocesses and always stops them."""

    def __init__(self, settings: Settings, models_dir: Path):
        self.settings, self.models_dir, self.procs = settings, models_dir, []

    def start(self, model: str, extra_env: dict | None = None, args: list[str] = (), wait: bool = True,
              launch: tuple[str, ...] = ("-m", "capq")) -> subprocess.Popen:
        """`launch` is what runs `capq` (a fault test may name a module that plants a crash first)."""
        env = {**os.environ, **settings_env(self.settings), "CAPQ_LOG_JSON": "false", **(extra_env or {})}
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = open(LOG_DIR / f"worker-{model}-{time.strftime('%H%M%S')}-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, *launch, "worker", "--model", model, "--checkpoint", str(self.models_dir / model),
             *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = log.name
        self.procs.append(proc)
        if wait:
            self.wait_ready(proc, model, env.get("CAPQ_REDIS_URL", self.settings.redis_url))
        return proc

    def wait_ready(self, proc, model: str, redis_url: str, timeout_s: float = 120) -> None:
        client = redis.Redis.from_url(redis_url)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited {proc.returncode}:\n{Path(proc.log_path).read_text()[-3000:]}")
            if client.exists(heartbeat_key(worker_id(model, proc.pid))):
                return
            time.sleep(0.2)
        raise AssertionError(f"worker for {model} not ready:\n{Path(proc.log_path).read_text()[-3000:]}")

    def kill9(self, proc) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def workers(settings, tiny_models, clean_redis):
    w = Workers(settings, tiny_models)
    yield w
    w.stop_all()


def make_job(settings: Settings, images: list[tuple[str, bytes]], model: str, tier: str = "free",
             preset: str = "default", shard_size: int | None = None, upload: bool = True) -> str:
    """Record and enqueue a job the way the producer does, minus validation (so bad bytes reach workers)."""
    store, jobs = ImageStore(settings), JobStore(settings)
    job, _ = jobs.create("test", tier, [model], preset)
    items = []
    for name, data in images:
        sha = store.put(data)[0] if upload else sha256_hex(data)
        items.append({"sha256": sha, "model": model, "preset": preset, "file_name": name})
    jobs.add_items(job["_id"], "test", items)
    jobs.set_state(job["_id"], "queued")
    enqueue_pending(create_app(settings), jobs, job["_id"], tier, shard_size or settings.batch_size * settings.shard_batches)
    return job["_id"]


def wait_job(settings: Settings, job_id: str, timeout_s: float = 300, poll_s: float = 0.3,
             recount: bool = True) -> dict:
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
