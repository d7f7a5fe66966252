"""Security suite fixtures: a real `capq api` process over the real stack, keys per owner, and attack helpers."""

from __future__ import annotations

import io
import os
import random
import socket
from pathlib import Path

import httpx
import pytest
import redis
from PIL import Image

from storage.apikeys import ApiKeys
from tests.conftest import REPO, free_port, settings_env
from tooling import procs
from tooling.images import noise_jpeg

# Small caps so that each attack is cheap to send and its refusal is plain to see.
LIMITS = {
    "CAPQ_MAX_REQUEST_BYTES": str(4 * 1024 * 1024),
    "CAPQ_MAX_BODY_BYTES": str(256 * 1024),
    "CAPQ_MAX_IMAGE_BYTES": str(1024 * 1024),
    "CAPQ_MAX_FILES_PER_REQUEST": "20",
    "CAPQ_MAX_ITEMS_PER_REQUEST": "50",
    "CAPQ_MAX_IMAGE_PIXELS": "25000000",
    "CAPQ_DECODE_BUDGET_PIXELS": "25000000",
    "CAPQ_IMAGE_LIMITS_PER_HOUR": "free=6,plus=1000,premium=1000",
    "CAPQ_RATE_LIMITS_PER_HOUR": "free=1000,plus=1000,premium=1000",
    "CAPQ_AUTH_FAILURE_LIMIT": "5",
    "CAPQ_LOG_JSON": "true",
}


class Api:
    """One `capq api` process: its base URL, pid (for RSS), log file and private temporary folder."""

    def __init__(self, env: dict, tmp: Path, extra_env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmpdir = tmp / f"api-tmp-{self.port}"
        self.tmpdir.mkdir()
        self.log_path = tmp / f"api-{self.port}.log"
        full = {**os.environ, **env, **LIMITS, **(extra_env or {}), "TMPDIR": str(self.tmpdir), "PYTHONPATH": str(REPO)}
        self.proc = procs.spawn_capq(["api", "--port", str(self.port)], self.log_path, full, REPO)

    def wait_ready(self, path: str = "/openapi.json", timeout_s: float = 60) -> Api:
        # Any answer under 500 will do: an API whose MongoDB or Redis is down (on purpose) still serves its schema.
        procs.wait_ready(
            self.proc, lambda: procs.http_ok(self.url + path, below=500, timeout_s=2), timeout_s, "capq api"
        )
        return self

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kw)

    def stop(self) -> None:
        procs.stop(self.proc, timeout_s=10)


@pytest.fixture(scope="session")
def sec_env(settings) -> dict:
    return settings_env(settings)


@pytest.fixture(scope="session")
def api(sec_env, tmp_path_factory):
    server = Api(sec_env, tmp_path_factory.mktemp("api")).wait_ready()
    yield server
    server.stop()


@pytest.fixture
def start_api(sec_env, tmp_path):
    """Start extra API processes (other settings, broken services); each is stopped after the test."""
    started = []

    def start(extra_env: dict | None = None, ready_path: str = "/openapi.json") -> Api:
        server = Api(sec_env, tmp_path, extra_env)
        started.append(server)
        return server.wait_ready(ready_path)

    yield start
    for server in started:
        server.stop()


@pytest.fixture(autouse=True)
def _forget_failed_keys(settings):
    """Failed-key counters are per client address, and every test comes from 127.0.0.1: start each test clean."""
    r = redis.Redis.from_url(settings.redis_url)
    for key in r.scan_iter("capq:rate:authfail:*"):
        r.delete(key)
    yield


@pytest.fixture
def key(settings):
    """A fresh key for `owner` at `tier`, as X-API-Key headers."""

    def make(owner: str, tier: str = "premium") -> dict:
        return {"X-API-Key": ApiKeys(settings).create(owner, tier)[0]}

    return make


def jpeg(seed: int, size=(40, 30)) -> bytes:
    return noise_jpeg(size, random.Random(seed))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A ~600-byte JPEG whose frame header claims width x height: the worker's decompression bomb."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def png_bomb(width: int, height: int) -> bytes:
    """A real, valid RGBA PNG of width x height, all zeros: a few hundred KB that decode to 4*w*h bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + 4 * width)
    comp = zlib.compressobj(9)
    raw = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def files(*named: tuple[str, bytes]) -> list:
    return [("files", (name, data, "application/octet-stream")) for name, data in named]


BIG = 200 * 1024 * 1024  # the body the attacker announces, and never has to send


def raw_request(
    api, path: str, headers: dict, body_prefix: bytes = b"", send_bytes: int = 0, length: int | None = None
) -> bytes:
    """Send the headers (and some of a huge body), then read the answer: it must come before the body does."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length or BIG}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    )
    with socket.create_connection(("127.0.0.1", api.port), timeout=30) as s:
        s.sendall(head.encode() + body_prefix)
        chunk = b"a=" + b"x" * (1024 * 1024)
        try:
            for _ in range(send_bytes // len(chunk)):
                s.sendall(chunk)
        except OSError:  # the server closed the connection on us: it has answered already
            pass
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            part = s.recv(65536)
            if not part:
                break
            answer += part
        return answer


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0
