"""`capq demo` end to end as a user runs it: stack, tiny models, workers, API, seed images, a table of captions."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import redis

from capq.names import WORKER_HEARTBEAT_KEY
from capq.settings import load_settings
from tests.conftest import REPO, SEED_IMAGES, free_port, settings_env


@pytest.fixture
def demo_env(settings):
    """The session's database and bucket, and a Redis port with nothing on it: the demo must start it itself."""
    env = {**settings_env(settings), "CAPQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    yield {**os.environ, **env, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    from capq import stack

    stack.down(load_settings(env))  # stops only what this home started: the demo's Redis


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def test_demo_captions_the_seed_images_with_two_models(demo_env):
    proc = subprocess.run([sys.executable, "-m", "capq", "demo", "--models", "blip,git"], env=demo_env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    assert "blip" in table and "git" in table
    assert all(p.name in table for p in SEED_IMAGES), table
    assert "submitted job" in proc.stderr and "over HTTP" in proc.stderr and "API ready" in proc.stderr
    assert "20 captioned, 0 failed" in proc.stderr


def test_demo_stops_what_it_started_on_ctrl_c(demo_env, tmp_path):
    log = tmp_path / "demo.err"
    with open(log, "wb") as errf:
        proc = subprocess.Popen([sys.executable, "-m", "capq", "demo", "--models", "blip"], env=demo_env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=errf)
    try:
        deadline = time.monotonic() + 300
        while "worker blip ready" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        client = redis.Redis.from_url(demo_env["CAPQ_REDIS_URL"])
        # The demo's Redis keeps its data under CAPQ_HOME, so an earlier demo's heartbeats may linger: take the live one.
        pids = [int(k.decode().rsplit(":", 1)[1]) for k in client.keys(f"{WORKER_HEARTBEAT_KEY}blip@{socket.gethostname()}:*")]
        [worker_pid] = [p for p in pids if _alive(p)]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
        assert "interrupted" in log.read_text()
        for _ in range(50):
            if not _alive(worker_pid):
                break
            time.sleep(0.2)
        assert not _alive(worker_pid), "the demo's worker outlived the demo"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
