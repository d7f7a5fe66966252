"""consume: run a Celery worker on given queues in this process, with the heartbeat health checks read."""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import redis
from celery import Celery

from capq import tracing
from capq.celery_app import create_app
from capq.names import MODELS_SEEN_KEY, heartbeat_key, worker_id
from capq.settings import Settings
from workers import healing

log = logging.getLogger("capq.worker")
HEARTBEAT_S = 10


def heartbeat_value(details: dict | None = None) -> str:
    """What a heartbeat key holds: JSON with the time it was written (`at`) and the worker's details."""
    return json.dumps({"at": time.time(), **(details or {})})


def _heartbeat(settings: Settings, wid: str, details: dict | None = None) -> None:
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=settings.connect_timeout_s)
    while True:
        try:
            client.pipeline().set(heartbeat_key(wid), heartbeat_value(details), ex=settings.worker_lost_after_s).hset(
                MODELS_SEEN_KEY, wid.split("@", 1)[0], str(time.time())
            ).execute()
        except redis.RedisError as exc:
            log.warning("heartbeat failed: %s", exc)
        time.sleep(min(HEARTBEAT_S, settings.worker_lost_after_s / 3))


def consume(
    settings: Settings,
    name: str,
    queues: list[str],
    pool: list[str],
    loglevel: str = "INFO",
    details: dict | None = None,
    app: Celery | None = None,
) -> None:
    """Start the heartbeat (read by `capq health --service worker`; `details` such as the batch size go in it),
    then consume `queues` until shut down, with `app` (default: a new one from settings)."""
    app = create_app(settings) if app is None else app
    tracing.connect_celery(settings)  # issue 18: tasks log under their submission's trace id
    wid = worker_id(name)
    threading.Thread(target=_heartbeat, args=(settings, wid, details), daemon=True).start()
    # Issue 11: record what this worker holds, and take part in healing (see workers.healing).
    if settings.healing:
        healing.HOLDINGS = healing.Holdings(settings, wid)
        healing.HOLDINGS.connect()
        healing.Healer(settings, app, wid).start()
    app.worker_main(
        [
            "worker",
            "--queues",
            ",".join(queues),
            *pool,
            "--events",
            "--hostname",
            f"{name}@%h-{os.getpid()}",
            "--loglevel",
            loglevel,
            "--without-gossip",
            "--without-mingle",
        ]
    )
