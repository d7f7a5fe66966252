"""`capq demo` end to end as a user runs it: stack, tiny models, workers, API, seed images, a table of captions."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from capq.names import heartbeat_key, worker_id
from capq.settings import load_settings
from tests.conftest import REPO, SEED_IMAGES, drop_scratch, free_port, settings_env


@pytest.fixture
def demo_env(settings):
    """A database and bucket of its own, and a Redis port with nothing on it: the demo must start it itself."""
    tag = os.urandom(3).hex()
    env = {
        **settings_env(settings),
        "CAPQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "CAPQ_MONGO_DB": f"{settings.mongo_db}_d{tag}",
        "CAPQ_S3_BUCKET": f"{settings.s3_bucket}-d{tag}",
    }
    yield {**os.environ, **env, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    from tooling import stack

    demo_settings = load_settings(env)
    stack.down(demo_settings)  # stops only what this home started: the demo's Redis
    drop_scratch(demo_settings)


@contextlib.contextmanager
def ctrl_c_reaches_children():
    """Start children as a terminal's foreground job: with Ctrl-C's SIGINT at its default. A command started in the
    background by a non-interactive shell (`make test &`, nohup, CI runners) inherits SIGINT ignored, which Python
    keeps, so the demo would never see the Ctrl-C (it then finished its job and exited 0, a failure seen in a fresh
    clone). A handler set here is reset to the default when the child execs."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def test_demo_captions_the_seed_images_with_two_models(demo_env):
    proc = subprocess.run(
        [sys.executable, "-m", "capq", "demo", "--models", "blip,git"],
        env=demo_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    assert "blip" in table and "git" in table
    assert all(p.name in table for p in SEED_IMAGES), table
    assert "submitted job" in proc.stderr and "over HTTP" in proc.stderr and "API ready" in proc.stderr
    assert "20 captioned, 0 failed" in proc.stderr


def _capq_children(pid: int) -> list[int]:
    """`python -m capq ...` processes whose parent is `pid` (from /proc); the stack's servers are meant to stay."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"-m\x00capq\x00" in cmdline:
                kids.append(int(entry))
    return kids


def test_demo_stops_what_it_started_on_ctrl_c(demo_env):
    # Given a demo with two workers and the API, frozen (SIGSTOP) the moment it has started them. It submits
    # only once every worker and the API answer, which takes each of them seconds (torch imports), so frozen
    # here it cannot reach its job: with cached tiny models it could otherwise caption all 20 images before
    # the Ctrl-C arrived, and exit 0.
    # A plain Popen, not tooling.procs: the test plays the terminal (SIGSTOP, Ctrl-C's SIGINT, SIGCONT; stderr piped).
    with ctrl_c_reaches_children():
        proc = subprocess.Popen(
            [sys.executable, "-m", "capq", "demo", "--models", "blip,git"],
            env=demo_env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    started: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while len(started) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, "demo ended before starting its children"
            time.sleep(0.02)
            started = _capq_children(proc.pid)
        proc.send_signal(signal.SIGSTOP)
        assert len(started) == 3, "two workers and the API"
        # and left frozen until its first worker is up (its children run in sessions of their own)
        client = redis.Redis.from_url(demo_env["CAPQ_REDIS_URL"])
        while True:
            assert time.monotonic() < deadline, "the demo's workers never came up"
            # Its Redis keeps data under CAPQ_HOME, so an earlier demo's heartbeats may linger: only its children count.
            beats = client.keys(heartbeat_key(worker_id("*", "*")))
            if any(int(k.decode().rsplit(":", 1)[1]) in started for k in beats):
                break
            time.sleep(0.1)
        # If I press Ctrl-C (delivered as it resumes)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGCONT)
        # I expect exit code 130 and none of the processes it started left running
        assert proc.wait(60) == 130
        assert b"interrupted" in proc.stderr.read()
        assert [p for p in started if _alive(p)] == [], "the demo's workers or API outlived it"
    finally:
        if proc.poll() is None:  # a failed assertion above: let the demo stop its children, then make sure
            proc.send_signal(signal.SIGINT)
            proc.send_signal(signal.SIGCONT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in [p for p in started if _alive(p)]:
            os.kill(pid, signal.SIGKILL)
