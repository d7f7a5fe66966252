"""fleet: what the queues hold and which workers are alive, read from Redis (queue lists and heartbeat keys)."""

from __future__ import annotations

import json
import time

import redis

from capq.names import (
    EVAL_QUEUE,
    MODEL_NAMES,
    TIERS,
    TRANSLATE_QUEUE,
    caption_queue,
    heartbeat_key,
    worker_of_heartbeat,
)
from capq.settings import Settings
from storage.errors import ServiceUnreachable
from storage.throughput import Throughput

THROUGHPUT_WINDOW_S = 300


class BrokerUnreachable(ServiceUnreachable):
    service = "Redis (the broker)"


def _client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.connect_timeout_s,
        socket_timeout=settings.connect_timeout_s,
        decode_responses=True,
    )


def _beat_at(value: str) -> float:
    """When a heartbeat was written: its JSON's `at` (workers.consume.heartbeat_value), or a bare time."""
    try:
        return float(json.loads(value)["at"])
    except (TypeError, ValueError, KeyError):
        return float(value)


def workers_online(client: redis.Redis) -> list[dict]:
    """[{name, host, pid, seen_s_ago}] from the heartbeat keys (`name@host:pid`, refreshed every 10 s)."""
    now, out = time.time(), []
    keys = sorted(client.scan_iter(heartbeat_key("*"), count=500))
    for key, beat in zip(keys, client.mget(keys) if keys else []):
        wid = worker_of_heartbeat(key)
        name, _, where = wid.partition("@")
        host, _, pid = where.rpartition(":")
        out.append(
            {
                "name": name,
                "host": host,
                "pid": pid,
                "seen_s_ago": round(max(0.0, now - _beat_at(beat)), 1) if beat else None,
            }
        )
    return out


def snapshot(settings: Settings) -> dict:
    """Queue depth per model and tier, workers per model, plus the evaluation and translation queues.
    Raises BrokerUnreachable (a 503 for the API) when Redis does not answer."""
    client = _client(settings)
    try:
        pipe = client.pipeline(transaction=False)
        for model in MODEL_NAMES:
            for tier in TIERS:
                pipe.llen(caption_queue(model, tier))
        pipe.llen(EVAL_QUEUE)
        pipe.llen(TRANSLATE_QUEUE)
        depths = pipe.execute()
        alive = workers_online(client)
    except redis.RedisError as exc:
        raise BrokerUnreachable(settings.redis_url.split("@")[-1], type(exc).__name__) from None
    recent = Throughput(settings).per_model(list(MODEL_NAMES), THROUGHPUT_WINDOW_S)
    models = []
    for n, model in enumerate(MODEL_NAMES):
        mine = [w for w in alive if w["name"] == model]
        models.append(
            {
                "model": model,
                "queues": dict(zip(TIERS, depths[n * len(TIERS) : (n + 1) * len(TIERS)])),
                "workers_online": len(mine),
                "workers": mine,
                "captions_per_min": round(recent[model] * 60 / THROUGHPUT_WINDOW_S, 2),
            }
        )
    return {
        "models": models,
        "eval_queue": depths[-2],
        "translate_queue": depths[-1],
        "translate_workers_online": sum(1 for w in alive if w["name"] == "translate"),
        "throughput_window_s": THROUGHPUT_WINDOW_S,
    }
