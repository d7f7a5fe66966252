"""throughput: each worker's recent images per second, kept in Redis so that ETAs can be computed anywhere."""

from __future__ import annotations

import json
import logging
import time
import uuid

import redis

from capq.names import THROUGHPUT_KEY, heartbeat_key, worker_of_heartbeat
from capq.settings import Settings

log = logging.getLogger("capq.worker")


def _client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=settings.connect_timeout_s, decode_responses=True
    )


def record(settings: Settings, model: str, worker_id: str, items: int, busy_s: float) -> None:
    """One finished shard: `items` handled in `busy_s` seconds of this worker's time. Best effort: the shard's
    work is stored already, and a lost sample only makes an ETA less informed."""
    now = time.time()
    entry = json.dumps({"w": worker_id, "n": items, "s": round(busy_s, 4), "u": uuid.uuid4().hex[:8]})
    try:
        pipe = _client(settings).pipeline()
        pipe.zadd(THROUGHPUT_KEY + model, {entry: now})
        pipe.zremrangebyscore(THROUGHPUT_KEY + model, 0, now - settings.throughput_window_s)
        pipe.expire(THROUGHPUT_KEY + model, settings.throughput_window_s * 2)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("throughput sample lost: %s", exc)


def live_workers(client: redis.Redis) -> dict[str, list[str]]:
    """{model (or "eval"): [worker ids with a live heartbeat]}."""
    out: dict[str, list[str]] = {}
    for key in client.scan_iter(heartbeat_key("*"), count=500):
        wid = worker_of_heartbeat(key)
        out.setdefault(wid.split("@", 1)[0], []).append(wid)
    return out


def worker_rates(client: redis.Redis, model: str, window_s: float) -> dict[str, float]:
    """{worker id: images per busy second} of each worker that finished a shard of `model` within the window,
    live or not (capacity planning needs a worker's speed even when none runs now)."""
    since = time.time() - window_s
    per_worker: dict[str, list[float]] = {}
    for raw in client.zrangebyscore(THROUGHPUT_KEY + model, since, "+inf"):
        e = json.loads(raw)
        n_s = per_worker.setdefault(e["w"], [0.0, 0.0])
        n_s[0] += e["n"]
        n_s[1] += e["s"]
    return {w: n / s for w, (n, s) in per_worker.items() if s > 0}


def model_rates(settings: Settings, models: list[str]) -> dict[str, float | None]:
    """Images/s each model's live workers sustain together, from their shards within the window.

    Each worker's rate is its items over its busy seconds (idle time does not dilute it: an ETA is about a
    backlog, when workers are busy). None for a model with no live worker or none measured yet.
    """
    client = _client(settings)
    live = live_workers(client)
    rates: dict[str, float | None] = {}
    for model in models:
        measured = worker_rates(client, model, settings.throughput_window_s)
        alive = [w for w in live.get(model, []) if w in measured]
        rates[model] = sum(measured[w] for w in alive) if alive else None
    return rates
