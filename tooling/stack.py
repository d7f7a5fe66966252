"""stack: start, stop and inspect the local Redis, MongoDB wire server and S3 server on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from capq.settings import Settings
from tooling import procs
from tooling.ports import free_port


class StackError(RuntimeError):
    """A local service could not be started or did not become ready."""


def _bin(name: str) -> str:
    """Prefer the executable installed beside this Python (the project's venv)."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        # redis-server is a system package; the other servers come with the dev requirements (PyPI).
        remedy = (
            "install it: apt-get install -y redis-server (make demo and make test do so when run as root)"
            if name == "redis-server"
            else "install the dev requirements (make test does)"
        )
        raise StackError(f"{name} not found; {remedy}, or put it on PATH")
    return found


def _port(url: str, default: int) -> int:
    return urlsplit(url).port or default


def redis_ready(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except Exception:
        return False


def mongo_ready(url: str) -> bool:
    from pymongo import MongoClient

    client = MongoClient(url, serverSelectionTimeoutMS=500, connectTimeoutMS=500)
    try:
        client.admin.command("ping")
        return True
    except Exception:
        return False
    finally:
        client.close()


def s3_ready(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint.rstrip("/") + "/healthz", timeout=0.5) as resp:
            return resp.status == 200
    except Exception:
        return False


@dataclass
class Service:
    """One server process with its data, log and pid file under `root/name`."""

    name: str
    url: str
    root: Path
    argv: Callable[[Path], list[str]]
    ready: Callable[[], bool]
    start_timeout_s: float = 60.0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def pidfile(self) -> Path:
        return self.dir / "pid"

    @property
    def logfile(self) -> Path:
        return self.dir / "log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text())
        except (OSError, ValueError):
            return None
        return pid if procs.alive(pid) else None

    def status(self) -> str:
        if self.ready():
            return "running" if self.pid() else "running (not started by capq)"
        return "starting" if self.pid() else "stopped"

    def start(self) -> str:
        """Start unless already answering; wait until ready. Returns what was done."""
        if self.ready():
            return "already running" if self.pid() else "reused (already answering)"
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        proc = procs.spawn(self.argv(self.dir), self.logfile, {**os.environ, **self.env}, cwd=self.dir, append=True)
        self.pidfile.write_text(str(proc.pid))
        try:
            procs.wait_ready(proc, self.ready, self.start_timeout_s, f"{self.name} at {self.url}")
        except procs.ProcessError as exc:
            raise StackError(str(exc)) from None
        return f"started (pid {proc.pid})"

    def stop(self, timeout_s: float = 15.0) -> str:
        pid = self.pid()
        if pid is None:
            return "not running (or not started by capq)"
        procs.stop(pid, timeout_s=timeout_s)
        self.pidfile.unlink(missing_ok=True)
        return f"stopped (pid {pid})"

    def kill(self) -> None:
        """SIGKILL at once: for fault tests that want a crash, not a shutdown."""
        pid = self.pid()
        if pid is not None:
            procs.kill9(pid)
            self.pidfile.unlink(missing_ok=True)


def redis_argv(port: int | str, folder: Path, appendonly: bool = False) -> list[str]:
    """redis-server on loopback at `port` with its files in `folder`: never snapshots; append-only when asked (the
    stack's own Redis), off for the private, throwaway servers of tests and benches."""
    return [
        _bin("redis-server"),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--dir",
        str(folder),
    ]


def spawn_redis(folder: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A throwaway redis-server of a test's or bench's own (redis_argv: no persistence) on `port` (a free one by
    default), its files and log (redis.log, appended: a restart on the same folder keeps the story); returns once
    it answers, with its URL. Stop it with procs.stop, crash it with procs.kill9."""
    port = port or free_port()
    url = f"redis://127.0.0.1:{port}/0"
    folder.mkdir(parents=True, exist_ok=True)
    proc = procs.spawn(redis_argv(port, folder), folder / "redis.log", append=True)
    procs.wait_ready(proc, lambda: redis_ready(url), 30, f"redis-server at {url}", poll_s=0.05)
    return proc, url


def redis_service(url: str, root: Path) -> Service:
    port = _port(url, 6379)
    return Service(
        "redis",
        url,
        root,
        lambda d: redis_argv(port, d / "data", appendonly=True),
        lambda: redis_ready(url),
    )


def redis_persistence_note(url: str) -> str:
    """Issue 11: '' when this Redis keeps its data on disk (capq starts it append-only); else a warning."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, decode_responses=True)
    try:
        aof, save = client.config_get("appendonly").get("appendonly"), client.config_get("save").get("save")
    except redis.ResponseError:  # CONFIG is disabled (a managed Redis): nothing to say
        return ""
    if aof == "yes" or save:
        return ""
    return (
        "; without persistence (appendonly no, no snapshots): a restart empties its queues, and the "
        "workers then send the pending work again from MongoDB"
    )


def mongo_service(url: str, root: Path) -> Service:
    port = _port(url, 27017)
    return Service(
        "mongodb",
        url,
        root,
        lambda d: [
            _bin("secantusd-py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(d / "data"),
            "--log-level",
            "WARNING",
        ],
        lambda: mongo_ready(url),
        # Unbuffered so a crash leaves its traceback in the log.
        env={"PYTHONUNBUFFERED": "1"},
    )


def s3_service(settings: Settings, root: Path, extra_args: tuple[str, ...] = ()) -> Service:
    """`extra_args` go to `weed mini` (a second server beside the stack's names other ports for its parts)."""
    port = _port(settings.s3_endpoint, 8333)

    def argv(d: Path) -> list[str]:
        creds = {
            "identities": [
                {
                    "name": "capq",
                    "credentials": [{"accessKey": settings.s3_access_key, "secretKey": settings.s3_secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (d / "s3.json").write_text(json.dumps(creds))
        return [
            _bin("weed"),
            "mini",
            f"-dir={d / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            f"-s3.port={port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={d / 's3.json'}",
            *extra_args,
        ]

    return Service("s3", settings.s3_endpoint, root, argv, lambda: s3_ready(settings.s3_endpoint))


def services(settings: Settings) -> list[Service]:
    root = settings.stack_dir.resolve()
    return [
        redis_service(settings.redis_url, root),
        mongo_service(settings.mongo_url, root),
        s3_service(settings, root),
    ]


def up(settings: Settings, report: Callable[[str, str, str], None] = lambda *a: None) -> None:
    """Start every service that is not answering, wait for each, then create bucket and indexes."""
    for svc in services(settings):
        state = svc.start()
        if svc.name == "redis":
            state += redis_persistence_note(settings.redis_url)
        report(svc.name, state, svc.url)
    from storage.blobs import ImageStore
    from storage.db import Mongo

    ImageStore(settings).ensure_bucket()
    Mongo(settings).ensure_indexes()


def down(settings: Settings, report: Callable[[str, str, str], None] = lambda *a: None) -> None:
    for svc in reversed(services(settings)):
        report(svc.name, svc.stop(), svc.url)


def status(settings: Settings) -> list[tuple[str, str, str, str]]:
    return [(s.name, s.status(), s.url, str(s.logfile)) for s in services(settings)]
