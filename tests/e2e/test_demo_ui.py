"""`capq demo --keep-running`: the stack, a worker, the API and the web UI stay up, the URL is printed, Ctrl-C ends
all."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx

from tests.conftest import REPO, free_port
from tests.e2e.test_demo import _alive, _capq_children, ctrl_c_reaches_children, demo_env  # noqa: F401 (fixture)


def test_keep_running_serves_the_ui_until_ctrl_c(demo_env):  # noqa: F811
    port = free_port()
    # A plain Popen, not tooling.procs: the test plays the terminal (reads the URL as printed, then Ctrl-C's SIGINT).
    with ctrl_c_reaches_children():
        proc = subprocess.Popen(
            [sys.executable, "-m", "capq", "demo", "--models", "blip", "--keep-running", "--ui-port", str(port)],
            env=demo_env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    started: list[int] = []
    try:
        # Given the demo has captioned the seed images, it prints the UI's URL and stays up
        url = next((line.strip() for line in proc.stdout if line.startswith("http://")), None)
        assert url == f"http://127.0.0.1:{port}", proc.stderr.read()[-3000:] if proc.poll() is not None else url
        assert httpx.get(f"{url}/_stcore/health", timeout=10).text == "ok"
        started = _capq_children(proc.pid)
        assert len(started) == 3, "the worker, the API and the UI"
        time.sleep(1)
        assert proc.poll() is None, "the demo kept running"
        # If I press Ctrl-C, everything it started stops and the UI no longer answers
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
        assert [p for p in started if _alive(p)] == []
        try:
            httpx.get(f"{url}/_stcore/health", timeout=2)
            raise AssertionError("the UI still answers after Ctrl-C")
        except httpx.HTTPError:
            pass
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in [p for p in started if _alive(p)]:
            subprocess.run(["kill", "-9", str(pid)], check=False)
