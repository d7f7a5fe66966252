"""ETA accuracy: a backlog in two tiers run by a worker of known throughput, predicted finish times against actual."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from producer.queries import job_status, list_jobs
from storage.jobs import JobStore
from tests.conftest import REPO, settings_env
from tests.e2e.conftest import LOG_DIR, make_job, random_images, wait_job
from tests.e2e.procs import stop
from tooling import procs
from tooling.workers import wait_heartbeat

SECONDS_PER_IMAGE = 0.1


def _start_slow_worker(settings, seconds_per_image: float = SECONDS_PER_IMAGE, batch_size: int = 8) -> subprocess.Popen:
    env = {
        **os.environ,
        **settings_env(settings),
        "CAPQ_LOG_JSON": "false",
        "CAPQ_BATCH_SIZE": str(batch_size),
        "CAPQ_TEST_SECONDS_PER_IMAGE": str(seconds_per_image),
    }
    log = LOG_DIR / f"slow-worker-{time.strftime('%H%M%S')}.log"
    proc = procs.spawn([sys.executable, "-m", "tests.e2e.slow_worker"], log, env, cwd=REPO)
    try:
        wait_heartbeat(proc, "blip", settings.redis_url)
    except procs.ProcessError:
        procs.stop(proc)
        raise
    return proc


def test_eta_of_each_job_matches_its_actual_finish(settings, clean_redis):
    proc = _start_slow_worker(settings)
    try:
        # Given a worker at a known 10 images/s whose rate was seen on a warm-up job
        wait_job(settings, make_job(settings, random_images(16, seed=80), "blip", shard_size=4))
        # If a backlog arrives: 40 free images, 24 plus, then 16 more free
        a = make_job(settings, random_images(40, seed=81), "blip", tier="free", shard_size=4)
        b = make_job(settings, random_images(24, seed=82), "blip", tier="plus", shard_size=4)
        c = make_job(settings, random_images(16, seed=83), "blip", tier="free", shard_size=4)
        t0 = time.time()
        statuses = {j: job_status(settings, j) for j in (a, b, c)}
        assert all(s["eta"] for s in statuses.values()), statuses
        predicted = {j: s["eta"]["eta_s"] for j, s in statuses.items()}
        listed = {j["job_id"]: j["eta"] for j in list_jobs(settings, "test", 10)}
        assert all(listed[j]["eta_s"] is not None for j in (a, b, c))
        # and the CLI shows the last job's ETA while it waits
        env = {**os.environ, **settings_env(settings), "COLUMNS": "250"}
        shown = subprocess.run(
            [sys.executable, "-m", "capq", "status", c], env=env, capture_output=True, text=True, cwd=REPO, timeout=60
        )
        assert shown.returncode == 0 and " in " in shown.stdout and "eta" in shown.stdout, shown.stdout + shown.stderr
        # I expect each job done close to its predicted time
        jobs, actual = JobStore(settings), {}
        deadline = time.monotonic() + 300
        while len(actual) < 3:
            for j in {a, b, c} - set(actual):
                if jobs.refresh_counts(j)["state"] == "done":
                    actual[j] = time.time() - t0
            assert time.monotonic() < deadline, f"backlog did not finish: {actual}"
            time.sleep(0.05)
        errors = {j: abs(predicted[j] - actual[j]) / actual[j] for j in (a, b, c)}
        report = "; ".join(
            f"{name}: predicted {predicted[j]:.1f}s actual {actual[j]:.1f}s error {errors[j]:.0%}"
            for name, j in (("free 40", a), ("plus 24", b), ("free +16", c))
        )
        print("ETA accuracy:", report)
        # the plus job, with its larger share, is predicted and seen first; the later free job last
        assert predicted[b] < predicted[a] < predicted[c], report
        assert actual[b] < actual[a] < actual[c], report
        assert max(errors.values()) < 0.5, report
        # and a finished job has no ETA
        assert job_status(settings, a)["eta"] is None
    finally:
        stop(proc)
