"""Work heals itself (issue 11): a kill -9'd worker and a Redis that comes back empty, with real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
import redis

from capq.names import HELD_KEY, caption_queues
from storage.blobs import ImageStore, sha256_hex
from storage.captions import CaptionStore
from storage.db import Mongo
from storage.jobs import JobStore
from tests.conftest import free_port
from tests.e2e.conftest import env_settings, make_job, random_images, wait_job
from tests.e2e.procs import stop
from tests.e2e.test_eta import _start_slow_worker
from tooling.procs import kill9
from tooling.stack import mongo_service, s3_service, spawn_redis
from workers.deadletters import DeadLetters


def _wait_done(jobs: JobStore, job_id: str, at_least: int, proc=None, timeout_s: float = 300) -> int:
    deadline = time.monotonic() + timeout_s  # only stops a hung test
    while time.monotonic() < deadline:
        done = jobs.counts(job_id)["done"]
        if done >= at_least:
            return done
        assert proc is None or proc.poll() is None, "worker died on its own"
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {at_least} done: {jobs.counts(job_id)}")


def _exactly_once(s, job_id: str, n: int) -> None:
    job = wait_job(s, job_id, timeout_s=600)
    assert job["state"] == "done"
    assert job["counts"] == {"queued": 0, "done": n, "failed": 0, "cancelled": 0, "total": n}
    items = JobStore(s).items_of(job_id)
    assert len(items) == n and len({it["sha256"] for it in items}) == n
    assert CaptionStore(s).count({"job_id": job_id}) == n, "every image captioned once, none twice"


def test_a_kill_9_worker_shard_comes_back_without_waiting_out_the_visibility_timeout(settings, workers):
    # Given a worker on a job, with CAPQ_VISIBILITY_TIMEOUT_S at its default (an hour)
    # (a database of its own: the test drops it at the end)
    s, env = env_settings(settings, mongo_db=settings.mongo_db + "_kill9", batch_size=2, shard_batches=10)
    Mongo(s).ensure_indexes()
    assert s.visibility_timeout_s == 3600
    first = workers.start("blip", env)
    job_id = make_job(s, random_images(60, seed=11), "blip")
    jobs = JobStore(s)
    # If it is killed with kill -9 while it holds a shard
    _wait_done(jobs, job_id, 4, first)
    workers.kill9(first)
    done_at_kill = jobs.counts(job_id)["done"]
    assert done_at_kill < 60
    held = redis.Redis.from_url(s.redis_url).hlen("unacked")
    assert held >= 1, "the killed worker left its shard unacked"
    # and another worker is started
    workers.start("blip", env)
    # I expect the job to complete, every image captioned exactly once
    try:
        _exactly_once(s, job_id, 60)
    finally:
        Mongo(s).client.drop_database(s.mongo_db)


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own, with no persistence (as a default install runs)."""

    class Server:
        def __init__(self):
            self.proc, self.url = spawn_redis(tmp_path / "redis")

        def start(self):
            """Again on the same port, empty."""
            self.proc, _ = spawn_redis(tmp_path / "redis", urlsplit(self.url).port)

        def kill9(self):
            kill9(self.proc)

    server = Server()
    yield server
    stop(server.proc, timeout_s=10)


def test_redis_restarted_empty_the_job_still_completes_exactly(settings, workers, private_redis):
    # Given a worker and a job on a Redis with no persistence
    # (a database of its own too: to this Redis every other test's unfinished job would be a lost one)
    s, env = env_settings(
        settings, redis_url=private_redis.url, mongo_db=settings.mongo_db + "_lost_redis", batch_size=2, shard_batches=5
    )
    Mongo(s).ensure_indexes()
    try:
        workers.start("blip", env)
        job_id = make_job(s, random_images(60, seed=12), "blip")
        jobs = JobStore(s)
        _wait_done(jobs, job_id, 4)
        # If Redis is killed with kill -9 and started again, empty, on the same port, while the worker runs
        private_redis.kill9()
        private_redis.start()
        # (the worker reconnects at once and may write its heartbeat; what matters is that no work is left there)
        fresh = redis.Redis.from_url(private_redis.url)
        assert not any(fresh.llen(q) for q in caption_queues("blip")) and not fresh.hlen("unacked")
        assert jobs.counts(job_id)["queued"] > 0, "work was still pending when Redis lost it"
        # I expect every pending item to be sent again and the job to complete exactly
        _exactly_once(s, job_id, 60)
    finally:
        Mongo(s).client.drop_database(s.mongo_db)


def test_a_cancel_stops_a_shard_in_flight_within_one_batch(settings):
    # Given a worker captioning a job of one 30-image shard, 2 images a batch, at a known 2 images/s: the cancel
    # lands while the shard runs however slowly the `capq cancel` process starts (a tiny model could finish first)
    s, env = env_settings(settings, batch_size=2, shard_batches=15)
    worker = _start_slow_worker(s, seconds_per_image=0.5, batch_size=2)
    try:
        _cancel_in_flight(s, env, make_job(s, random_images(30, seed=13), "blip"))
    finally:
        stop(worker)


def _cancel_in_flight(s, env, job_id: str) -> None:
    jobs, captions = JobStore(s), CaptionStore(s)
    _wait_done(jobs, job_id, 4)
    # If the job is cancelled with `capq cancel` while the shard runs
    proc = subprocess.run(
        [sys.executable, "-m", "capq", "cancel", job_id],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    captioned_at_cancel = captions.count({"job_id": job_id})
    # I expect the shard to stop (its delivery acked) with at most the batch then running captioned after it
    client = redis.Redis.from_url(s.redis_url)
    deadline = time.monotonic() + 300  # only stops a hung test
    while client.hlen("unacked") or client.hlen(HELD_KEY):
        assert time.monotonic() < deadline, "the shard never finished"
        time.sleep(0.2)
    assert captions.count({"job_id": job_id}) <= captioned_at_cancel + 2
    job = jobs.refresh_counts(job_id)
    assert job["state"] == "cancelled"
    # Every item closed once: captioned before the cancel, or cancelled (the unique key keeps the first result).
    assert job["counts"]["queued"] == 0 and job["counts"]["total"] == 30
    assert job["counts"]["done"] + job["counts"]["cancelled"] == 30
    assert job["counts"]["cancelled"] >= 30 - captioned_at_cancel - 2
    # and a second cancel, of a cancelled job, to close nothing more
    again = subprocess.run(
        [sys.executable, "-m", "capq", "cancel", job_id],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "0 queued item(s)" in again.stdout


def test_an_image_that_kills_its_worker_3_times_is_failed_and_the_rest_captioned_once(settings, workers):
    # Given a worker that dies (SIGKILL) whenever a batch holds one marked image, restarted whenever it dies
    s, env = env_settings(settings, batch_size=4, shard_batches=3)
    images = random_images(12, seed=14)
    poison = sha256_hex(images[5][1])
    env["CAPQ_TEST_KILL_ON_SHA256"] = poison
    worker = workers.start("blip", env)
    job_id = make_job(s, images, "blip")
    jobs = JobStore(s)
    deaths = 0
    deadline = time.monotonic() + 900  # only stops a hung test
    while jobs.refresh_counts(job_id)["state"] != "done":
        assert time.monotonic() < deadline, f"job never finished: {jobs.counts(job_id)}"
        if worker.poll() is not None:
            deaths += 1
            worker = workers.start("blip", env)
        time.sleep(0.5)
    # I expect the job to complete with that image failed, naming the 3 deaths, and every other image captioned once
    assert deaths == 3
    counts = jobs.counts(job_id)
    assert counts == {"queued": 0, "done": 11, "failed": 1, "cancelled": 0, "total": 12}
    failed = [it for it in jobs.items_of(job_id) if it["state"] == "failed"]
    assert [it["sha256"] for it in failed] == [poison]
    assert failed[0]["error"] == "poison: the worker died while captioning this image 3 times"
    assert CaptionStore(s).count({"job_id": job_id}) == 11


def test_shards_dead_lettered_in_a_long_mongodb_outage_are_redriven_once_it_answers(settings, workers, tmp_path):
    # Given a worker whose MongoDB (a private server) is down for longer than its retries last
    url = f"mongodb://127.0.0.1:{free_port()}"
    svc = mongo_service(url, tmp_path)
    svc.start()
    try:
        s, env = env_settings(settings, mongo_url=url, connect_timeout_s=1, task_max_retries=1, retry_backoff_max_s=1)
        Mongo(s).ensure_indexes()
        job_id = make_job(s, random_images(3, seed=15), "vit-gpt2")
        svc.stop()
        workers.start("vit-gpt2", env)
        letters = DeadLetters(s)
        deadline = time.monotonic() + 300  # only stops a hung test
        while not letters.list():
            assert time.monotonic() < deadline, "the shard was never dead-lettered"
            time.sleep(0.5)
        assert "database unreachable" in letters.list()[0]["error"]
        # If MongoDB comes back, and no one types a command
        svc.start()
        # I expect the dead letter to be re-driven on its own and the job to complete
        job = wait_job(s, job_id, timeout_s=600)
        assert job["counts"]["done"] == 3 and job["counts"]["failed"] == 0
        assert letters.list() == []
    finally:
        svc.stop()


def _private_s3_ports() -> tuple[str, ...]:
    """Free ports for every part of a second `weed mini` (its defaults are the stack's, already taken)."""
    parts = (
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "admin.port",
        "admin.port.grpc",
        "s3.port.grpc",
    )
    return tuple(f"-{part}={free_port()}" for part in parts)


def test_shards_dead_lettered_in_a_long_s3_outage_are_redriven_once_it_answers(settings, workers, tmp_path):
    # Given a worker on an S3 server of this test's own (every setting at its default: the retries, about 40 s,
    # and the re-drive backoff, 60 s, make the test last about two minutes)
    s, env = env_settings(
        settings, s3_endpoint=f"http://127.0.0.1:{free_port()}", mongo_db=settings.mongo_db + "_s3_outage"
    )
    svc = s3_service(s, tmp_path, _private_s3_ports())
    svc.start()
    try:
        Mongo(s).ensure_indexes()
        store = ImageStore(s)
        store.ensure_bucket()
        images = random_images(6, seed=16)
        for _, data in images:
            store.put(data)
        workers.start("vit-gpt2", env)
        # If S3 stops, and a job is sent while it is down (its images already stored there)
        svc.stop()
        job_id = make_job(s, images, "vit-gpt2", upload=False)
        letters = DeadLetters(s)
        deadline = time.monotonic() + 600  # only stops a hung test
        while not letters.list():
            assert time.monotonic() < deadline, "the shard was never dead-lettered"
            time.sleep(0.5)
        assert "object store unreachable" in letters.list()[0]["error"]
        assert JobStore(s).counts(job_id)["done"] == 0
        # and S3 is started again, on the same data, and no one types a command
        svc.start()
        # I expect the dead letter to be re-driven on its own and the job to complete exactly
        _exactly_once(s, job_id, 6)
        assert letters.list() == []
    finally:
        svc.stop()
        Mongo(s).client.drop_database(s.mongo_db)
