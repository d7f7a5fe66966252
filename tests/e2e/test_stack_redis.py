"""`capq stack up` and Redis persistence (issue 11): it starts Redis append-only and says when it reuses one without."""

from __future__ import annotations

import os
import subprocess
import sys

import redis

from tests.conftest import free_port, settings_env
from tooling.procs import stop
from tooling.stack import spawn_redis


def _capq(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "capq", *args],
        env={**os.environ, **env, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_stack_up_starts_redis_append_only(settings, tmp_path):
    # Given no Redis at a free port (MongoDB and S3 answer already and are reused)
    url = f"redis://127.0.0.1:{free_port()}/0"
    env = {**settings_env(settings), "CAPQ_REDIS_URL": url, "CAPQ_HOME": str(tmp_path)}
    try:
        # If the stack is brought up
        proc = _capq(env, "stack", "up")
        assert proc.returncode == 0, proc.stderr
        # I expect capq to have started Redis with append-only persistence, and to say nothing against it
        assert redis.Redis.from_url(url, decode_responses=True).config_get("appendonly")["appendonly"] == "yes"
        assert "without persistence" not in proc.stdout
    finally:
        _capq(env, "stack", "down")


def test_stack_up_says_so_when_it_reuses_a_redis_without_persistence(settings, tmp_path):
    # Given a Redis already running with neither AOF nor snapshots
    server, url = spawn_redis(tmp_path / "redis")
    try:
        # If the stack is brought up
        proc = _capq({**settings_env(settings), "CAPQ_REDIS_URL": url, "CAPQ_HOME": str(tmp_path)}, "stack", "up")
        # I expect it to reuse that Redis and to say it has no persistence
        assert proc.returncode == 0, proc.stderr
        assert "reused" in proc.stdout and "without persistence" in proc.stdout
    finally:
        stop(server, timeout_s=10)
