"""procs: start `capq` subprocesses with their logs under LOG_DIR, wait for their HTTP endpoints, stop them for sure."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.conftest import REPO
from tests.e2e.conftest import LOG_DIR


def spawn_capq(env: dict, name: str, *args: str) -> subprocess.Popen:
    """`python -m capq ARGS` in its own session; its output goes to LOG_DIR/NAME-TIME.log (proc.log_path)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    path = LOG_DIR / f"{name}-{time.strftime('%H%M%S')}.log"
    proc = subprocess.Popen([sys.executable, "-m", "capq", *args], env=env, cwd=REPO, stdout=open(path, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = str(path)
    return proc


def wait_http(client: httpx.Client, path: str, timeout_s: float = 60) -> httpx.Response:
    """GET until it answers 200 (the timeout only stops a hung test)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            resp = client.get(path)
            if resp.status_code == 200:
                return resp
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{path} never answered 200"
        time.sleep(0.3)


def stop(*procs: subprocess.Popen) -> None:
    """TERM each one's session (a worker's pool children too), then KILL what is left."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
