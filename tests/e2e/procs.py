"""procs: `capq` subprocesses for the e2e stories, with their logs under LOG_DIR (the harness is tooling.procs)."""

from __future__ import annotations

import subprocess
import time

import httpx

from tooling import procs
from tooling.paths import LOG_DIR, REPO
from tooling.procs import stop  # noqa: F401 (re-exported: tests import it from here)


def spawn_capq(env: dict, name: str, *args: str) -> subprocess.Popen:
    """`python -m capq ARGS` in its own session; its output goes to LOG_DIR/NAME-TIME.log (proc.log_path)."""
    return procs.spawn_capq(args, LOG_DIR / f"{name}-{time.strftime('%H%M%S')}.log", env, cwd=REPO)


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
