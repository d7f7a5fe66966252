"""consume: run a Celery worker on given queues in this process, with the heartbeat health checks read."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time

import redis

from capq import tracing
from capq.names import MODELS_SEEN_KEY, WORKER_HEARTBEAT_KEY
from capq.settings import Settings
from workers import healing

log = logging.getLogger("capq.worker")
HEARTBEAT_S = 10


def worker_id(name: str) -> str:
    """`name@host:pid`: what heartbeats, logs and captions call this process."""
    return f"{name}@{socket.gethostname()}:{os.getpid()}"


def _heartbeat(settings: Settings, wid: str) -> None:
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=settings.connect_timeout_s)
    while True:
        try:
            now = str(time.time())
            client.pipeline().set(WORKER_HEARTBEAT_KEY + wid, now, ex=settings.worker_lost_after_s) \
                .hset(MODELS_SEEN_KEY, wid.split("@", 1)[0], now).execute()
        except redis.RedisError as exc:
            log.warning("heartbeat failed: %s", exc)
        time.sleep(min(HEARTBEAT_S, settings.worker_lost_after_s / 3))


def consume(settings: Settings, name: str, queues: list[str], pool: list[str], loglevel: str = "INFO") -> None:
    """Start the heartbeat (read by `capq health --service worker`), then consume `queues` until shut down."""
    from workers.celery_app import app

    tracing.connect_celery(settings)  # issue 18: tasks log under their submission's trace id
    wid = worker_id(name)
    threading.Thread(target=_heartbeat, args=(settings, wid), daemon=True).start()
    # Issue 11: record what this worker holds, and take part in healing (see workers.healing).
    healing.HOLDINGS = healing.Holdings(settings, wid)
    healing.HOLDINGS.connect()
    healing.Healer(settings, app, wid).start()
    app.worker_main(["worker", "--queues", ",".join(queues), *pool, "--events", "--hostname",
                     f"{name}@%h-{os.getpid()}", "--loglevel", loglevel, "--without-gossip", "--without-mingle"])
