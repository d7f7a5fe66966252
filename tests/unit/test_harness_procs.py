"""tooling.procs, the one process manager of the stack, the demo, the e2e tests and the benches, on real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from tooling import procs
from tooling.ports import free_port

# A parent that starts a grandchild (as a Celery worker starts its pool) and prints both pids; it ignores TERM
# when told to, as a hung process would.
FAMILY = textwrap.dedent("""
    import signal, subprocess, sys, time
    if sys.argv[1] == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("pids", child.pid, flush=True)
    time.sleep(600)
""")


def _family(tmp_path, mode: str = "polite") -> tuple[subprocess.Popen, int]:
    proc = procs.spawn([sys.executable, "-c", FAMILY, mode], tmp_path / f"{mode}.log")
    deadline = time.monotonic() + 60
    while "pids" not in (text := (tmp_path / f"{mode}.log").read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, text
        time.sleep(0.05)
    return proc, int(text.split()[1])


def _gone(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while procs.alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_stop_ends_the_whole_session_grandchildren_included(tmp_path):
    # Given a child in its own session that started a grandchild
    proc, grandchild = _family(tmp_path)
    assert os.getsid(proc.pid) == proc.pid != os.getsid(0)
    # If it is stopped
    procs.stop(proc)
    # I expect both gone, the child reaped
    assert proc.returncode is not None and _gone(grandchild)


def test_stop_kills_what_ignores_term_and_kill9_needs_no_grace(tmp_path):
    stubborn, grandchild = _family(tmp_path, "stubborn")
    t0 = time.monotonic()
    procs.stop(stubborn, timeout_s=1)
    assert stubborn.returncode == -9 and _gone(grandchild) and time.monotonic() - t0 < 10
    crashed, _ = _family(tmp_path)
    procs.kill9(crashed)
    assert crashed.returncode == -9


def test_a_pid_from_a_pid_file_is_stopped_too(tmp_path):
    # The local stack stops, in a later command, servers an earlier one started: it knows only their pid.
    proc, grandchild = _family(tmp_path)
    procs.stop(proc.pid)
    assert not procs.alive(proc.pid) and _gone(grandchild)


def test_wait_ready_names_a_dead_child_with_its_log_and_a_slow_one(tmp_path):
    dead = procs.spawn(
        [sys.executable, "-c", "print('bad config: port taken'); raise SystemExit(3)"], tmp_path / "dead.log"
    )
    with pytest.raises(procs.ProcessDied, match=r"(?s)server exited with code 3.*bad config: port taken"):
        procs.wait_ready(dead, lambda: False, 60, "server")
    slow, _ = _family(tmp_path)
    try:
        with pytest.raises(procs.NotReady, match="server not ready within 0s"):
            procs.wait_ready(slow, lambda: False, 0.3, "server")
        procs.wait_ready(slow, lambda: True, 0.3, "server")
    finally:
        procs.stop(slow)


def test_processes_check_reports_the_child_that_died(tmp_path):
    group = procs.Processes(tmp_path / "logs", {"CAPQ_MARK": "x"})
    group.start("ok", [sys.executable, "-c", "import time; time.sleep(600)"])
    group.start("env", [sys.executable, "-c", "import os; print(os.environ['CAPQ_MARK']); raise SystemExit(5)"])
    try:
        group.procs["env"].wait(60)
        with pytest.raises(procs.ProcessDied, match=r"(?s)env exited with code 5.*\nx$"):
            group.check()
    finally:
        group.stop_all()
    assert all(p.returncode is not None for p in group.procs.values())


def test_http_ok_tells_up_from_down_and_a_refusal_from_a_crash(tmp_path):
    # Given a plain HTTP server (200 on /, 404 elsewhere) and a port nothing listens on
    port, closed = free_port(), free_port()
    server = procs.spawn([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], tmp_path / "http.log")
    try:
        url = f"http://127.0.0.1:{port}"
        procs.wait_ready(server, lambda: procs.http_ok(url + "/"), 60, "http.server")
        # I expect a 404 not ok, but ok when anything under 500 will do; nothing listening: not ok
        assert not procs.http_ok(url + "/missing") and procs.http_ok(url + "/missing", below=500)
        assert not procs.http_ok(f"http://127.0.0.1:{closed}/")
    finally:
        procs.stop(server)


def test_spawn_redis_answers_and_comes_back_empty_on_its_port_after_kill9(tmp_path):
    import redis

    from tooling.stack import spawn_redis

    proc, url = spawn_redis(tmp_path / "redis")
    try:
        redis.Redis.from_url(url).set("k", "v")
        procs.kill9(proc)
        proc, again = spawn_redis(tmp_path / "redis", int(url.rsplit(":", 1)[1].split("/")[0]))
        # A private Redis keeps nothing on disk: a restart is an empty one on the same URL
        assert again == url and redis.Redis.from_url(url).get("k") is None
    finally:
        procs.stop(proc)
