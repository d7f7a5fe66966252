"""Waiting on a job (issue 11): `--timeout` exits 3 with the state; a MongoDB blip does not end the wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import redis

from capq.names import OUTAGES_KEY
from storage.db import Mongo
from storage.jobs import JobStore
from tests.conftest import SEED_IMAGES, free_port
from tests.e2e.conftest import env_settings
from tests.e2e.procs import spawn_capq, stop
from tooling.procs import tail
from tooling.stack import mongo_service
from workers.deadletters import DeadLetters

WAIT_TIMEOUT_EXIT = 3  # documented in the README


def _queued_job(s, n: int) -> tuple[JobStore, str]:
    jobs = JobStore(s)
    job, _ = jobs.create("test", "free", ["git"], "default")
    jobs.add_items(job["_id"], "test", [{"sha256": f"{i:064x}", "model": "git", "preset": "default"} for i in range(n)])
    jobs.set_state(job["_id"], "queued")
    return jobs, job["_id"]


def test_watch_gives_up_after_its_timeout_with_a_distinct_code_and_the_state(settings):
    # Given a job no worker takes
    s, env = env_settings(settings)
    _, job_id = _queued_job(s, 2)
    # If it is watched with --timeout
    proc = subprocess.run(
        [sys.executable, "-m", "capq", "status", job_id, "--watch", "--timeout", "1", "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    # I expect exit code 3 and the job's state and counts as the last line
    assert proc.returncode == WAIT_TIMEOUT_EXIT, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["event"] == "timeout" and last["state"] == "queued" and last["counts"]["queued"] == 2


def test_watch_keeps_polling_through_a_mongodb_outage(settings, tmp_path):
    # Given a job on a MongoDB of the test's own, watched by `capq status --watch`
    url = f"mongodb://127.0.0.1:{free_port()}"
    svc = mongo_service(url, tmp_path)
    svc.start()
    try:
        s, env = env_settings(settings, mongo_url=url, connect_timeout_s=1)
        Mongo(s).ensure_indexes()
        jobs, job_id = _queued_job(s, 1)
        watcher = spawn_capq({**os.environ, **env}, "watcher", "status", job_id, "--watch", "--json")
        log = Path(watcher.log_path)
        try:
            time.sleep(3)
            # If MongoDB stops for a while, then comes back and the job finishes
            svc.stop()
            time.sleep(4)
            assert watcher.poll() is None, f"the watcher gave up during the outage: {tail(log)}"
            svc.start()
            jobs.finish_items(
                job_id, "test", "git", "default", [{"sha256": f"{0:064x}", "state": "done", "caption": "c"}]
            )
            watcher.wait(120)
        finally:
            stop(watcher)
        # I expect the watcher to have waited it out and to report the job done (its last JSON line: the log holds
        # stderr too)
        assert watcher.returncode == 0, tail(log)
        assert '"state": "done"' in [line for line in log.read_text().splitlines() if line.startswith("{")][-1]
    finally:
        svc.stop()


def test_submit_warns_when_no_worker_serves_the_model_and_the_job_says_why_it_waits(settings, clean_redis, tmp_path):
    # Given no worker online for git (the queues are empty, nothing heartbeats)
    s, env = env_settings(settings)
    (tmp_path / "a.jpg").write_bytes(SEED_IMAGES[0].read_bytes())
    # If a job for git is submitted with --wait and a timeout
    proc = subprocess.run(
        [sys.executable, "-m", "capq", "submit", str(tmp_path), "--model", "git", "--wait", "--timeout", "1"],
        env={**os.environ, **env, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    # I expect it accepted, a warning that no worker is online for git, and exit 3 with the state
    assert proc.returncode == WAIT_TIMEOUT_EXIT, proc.stderr
    assert "warning: no worker online for model git" in proc.stderr and "still queued after 1s" in proc.stderr
    job_id = proc.stdout.split()[0]
    # and status, jobs and the API to say why the job waits
    status = json.loads(
        subprocess.run(
            [sys.executable, "-m", "capq", "status", job_id, "--json"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    )
    assert status["waiting"].startswith("no worker online for model git (none seen yet")
    # A dead letter of the job and an outage add their words
    DeadLetters(s).add(
        "capq.caption_shard",
        [job_id, "git", "default", ["x", "y"], None],
        "capq.git.free",
        "gave up after 5 retries: object store unreachable at http://s3",
        5,
    )
    redis.Redis.from_url(s.redis_url).hset(OUTAGES_KEY, "object store", "0")
    listed = [
        json.loads(line)
        for line in subprocess.run(
            [sys.executable, "-m", "capq", "jobs", "--json"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout.splitlines()
    ]
    waiting = next(j for j in listed if j["job_id"] == job_id)["waiting"]
    assert "waiting on S3 (unreachable since 00:00 UTC)" in waiting
    assert "2 items in dead letters: gave up after 5 retries: object store unreachable" in waiting
