"""procs: child processes in sessions of their own, each with a log file: spawn, wait until ready, stop, kill -9.

One process manager for the local stack, the demo, the e2e tests and the benches. Every child leads a session of
its own, for two reasons: a terminal's Ctrl-C reaches only the parent (which then stops its children in order),
and stopping a child signals its whole session, so a Celery worker's pool processes go with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from capq.settings import Settings

Proc = subprocess.Popen | int  # a child we started, or the pid of one started by an earlier command (a pid file)


class ProcessError(RuntimeError):
    """A child process failed to come up; the message carries the tail of its log."""


class ProcessDied(ProcessError):
    """The child exited while it was awaited."""


class NotReady(ProcessError):
    """The child was still not ready when the wait ran out."""


def settings_env(settings: Settings) -> dict[str, str]:
    """The CAPQ_* variables that reproduce `settings` in a subprocess."""
    env = {}
    for name, value in settings.model_dump().items():
        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in value.items())
        env["CAPQ_" + name.upper()] = str(value)
    return env


def spawn(
    argv: list[str],
    log_path: Path | str,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    append: bool = False,
) -> subprocess.Popen:
    """Start argv in a session of its own, stdout and stderr into log_path (proc.log_path), stdin empty.

    env is the child's whole environment (default: ours)."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab" if append else "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=dict(os.environ if env is None else env),
            start_new_session=True,
        )
    proc.log_path = str(log_path)
    return proc


def spawn_capq(
    args: Iterable[str],
    log_path: Path | str,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    launch: Iterable[str] = ("-m", "capq"),
) -> subprocess.Popen:
    """`python -m capq ARGS` with spawn(); `launch` replaces `-m capq` (a fault test may name a module that
    plants a crash first, then runs capq)."""
    return spawn([sys.executable, *launch, *args], log_path, env, cwd)


def tail(path: Path | str | None, lines: int = 15) -> str:
    """The last lines of a log, for error messages."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except (OSError, TypeError):
        return "(no log)"


def wait_ready(
    proc: subprocess.Popen, ready: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.2
) -> None:
    """Poll ready() until it is true. ProcessDied if proc exits first; NotReady after timeout_s (which only stops
    a hung wait: it is no speed check). Both name `what` and end with the tail of proc's log."""
    log = getattr(proc, "log_path", None)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise ProcessDied(f"{what} exited with code {proc.returncode}; see {log}:\n{tail(log)}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise NotReady(f"{what} not ready within {timeout_s:.0f}s; see {log}:\n{tail(log)}")
        time.sleep(poll_s)


def http_ok(url: str, below: int = 300, timeout_s: float = 1.0) -> bool:
    """Whether GET url answers with a status under `below`: a ready() for wait_ready (an API's /healthz; below=500
    for one that answers, if with 503, while a service behind it is down)."""
    import http.client
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    try:
        with opener.open(url, timeout=timeout_s) as resp:
            return resp.status < below
    except urllib.error.HTTPError as exc:
        return exc.code < below
    except (OSError, http.client.HTTPException):  # refused, reset, timed out: not up yet
        return False


def _pid(proc: Proc) -> int:
    return proc if isinstance(proc, int) else proc.pid


def alive(proc: Proc) -> bool:
    """Whether the process still runs (a child of ours that has exited is reaped, so it does not linger)."""
    if not isinstance(proc, int):
        return proc.poll() is None
    try:
        if os.waitpid(proc, os.WNOHANG)[0] == proc:
            return False
    except ChildProcessError:  # not our child: only the signal probe can tell
        pass
    try:
        os.kill(proc, 0)
        return True
    except OSError:
        return False


def _signal(proc: Proc, sig: int) -> None:
    try:
        os.killpg(_pid(proc), sig)
    except ProcessLookupError:  # the session is gone already
        pass


def _wait(proc: Proc, deadline: float) -> bool:
    """Wait until proc is gone or the deadline passes; whether it is gone."""
    if not isinstance(proc, int):
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
            return True
        except subprocess.TimeoutExpired:
            return False
    while alive(proc):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def stop(*procs: Proc, timeout_s: float = 15.0) -> None:
    """TERM each one's whole session (a worker's pool children too), wait up to timeout_s for all of them
    together, then KILL the sessions still running."""
    for proc in procs:
        if alive(proc):
            _signal(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        if not _wait(proc, deadline):
            kill9(proc)


def kill9(*procs: Proc) -> None:
    """SIGKILL each one's whole session at once: a crash, not a shutdown (fault tests, benches)."""
    for proc in procs:
        _signal(proc, signal.SIGKILL)
    for proc in procs:
        _wait(proc, time.monotonic() + 15.0)


class Processes:
    """Named children with their logs in one folder (NAME.log); check() fails on any that exited.

    Each child gets our environment as it is when it starts, plus extra_env."""

    def __init__(self, log_dir: Path, extra_env: Mapping[str, str] | None = None):
        self.log_dir, self.extra_env = Path(log_dir), dict(extra_env or {})
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        self.procs[name] = proc = spawn(argv, self.log_dir / f"{name}.log", {**os.environ, **self.extra_env})
        return proc

    def start_capq(self, name: str, args: list[str]) -> subprocess.Popen:
        return self.start(name, [sys.executable, "-m", "capq", *args])

    def check(self) -> None:
        """ProcessDied naming the first child that has exited, with its log's tail."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ProcessDied(
                    f"{name} exited with code {proc.returncode}; its log {proc.log_path} ends:\n{tail(proc.log_path)}"
                )

    def stop_all(self, timeout_s: float = 15.0) -> None:
        stop(*self.procs.values(), timeout_s=timeout_s)
