"""workers: start `capq worker` processes over a folder of checkpoints, wait for their heartbeats, stop them."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import redis

from capq.names import WORKER_HEARTBEAT_KEY
from capq.settings import load_settings
from tooling import procs
from tooling.paths import LOG_DIR


def heartbeat_key(model: str, pid: int, host: str | None = None) -> str:
    """The key a worker for `model` with this pid refreshes while it consumes (its id: model@host:pid)."""
    return f"{WORKER_HEARTBEAT_KEY}{model}@{host or socket.gethostname()}:{pid}"


def wait_heartbeat(
    proc: subprocess.Popen, model: str, redis_url: str, timeout_s: float = 120, settle_s: float = 0.0
) -> None:
    """Until the worker's heartbeat is in Redis: it has loaded its model (procs.ProcessError if it never comes).

    Its consumer starts just after the first heartbeat: a bench that times from the first message waits
    settle_s more."""
    client, key = redis.Redis.from_url(redis_url), heartbeat_key(model, proc.pid)
    procs.wait_ready(proc, lambda: bool(client.exists(key)), timeout_s, f"worker for {model}")
    time.sleep(settle_s)


class Workers:
    """`capq worker` subprocesses, one model each, with logs under log_dir; stop_all() stops every one started.

    env holds the CAPQ_* variables of the workers (procs.settings_env), over our own environment."""

    def __init__(self, env: Mapping[str, str], models_dir: Path, log_dir: Path = LOG_DIR):
        self.env, self.models_dir, self.log_dir = dict(env), Path(models_dir), Path(log_dir)
        self.procs: list[subprocess.Popen] = []

    def start(
        self,
        model: str,
        extra_env: Mapping[str, str] | None = None,
        args: list[str] = (),
        wait: bool = True,
        launch: tuple[str, ...] = ("-m", "capq"),
        settle_s: float = 0.0,
    ) -> subprocess.Popen:
        """A worker for `model` on models_dir/model; with wait, returns once it has loaded its model (and
        settle_s later: see wait_heartbeat). `launch` is what runs `capq` (a fault test may name a module that
        plants a crash first)."""
        env = {**os.environ, **self.env, **(extra_env or {})}
        log = self.log_dir / f"worker-{model}-{time.strftime('%H%M%S')}-{len(self.procs)}.log"
        proc = procs.spawn_capq(
            ["worker", "--model", model, "--checkpoint", str(self.models_dir / model), *args], log, env, launch=launch
        )
        self.procs.append(proc)
        if wait:
            wait_heartbeat(proc, model, env.get("CAPQ_REDIS_URL") or load_settings(env).redis_url, settle_s=settle_s)
        return proc

    def wait_ready(self, proc: subprocess.Popen, model: str, redis_url: str, timeout_s: float = 120) -> None:
        wait_heartbeat(proc, model, redis_url, timeout_s)

    def kill9(self, *killed: subprocess.Popen) -> None:
        procs.kill9(*killed)

    def stop_all(self) -> None:
        procs.stop(*self.procs)
