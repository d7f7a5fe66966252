"""key_stats: per-key requests and images this hour and this UTC day, and when each key was last used (Redis)."""

from __future__ import annotations

import functools
import logging
import time

import redis

from capq.names import KEY_STATS_KEY
from capq.settings import Settings

log = logging.getLogger("capq.api")
KEEP_S = 2 * 86400  # a day's counter outlives its day a little, then Redis drops it


@functools.cache
def _redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.connect_timeout_s,
        socket_timeout=settings.connect_timeout_s,
        decode_responses=True,
    )


def _windows(now: float) -> dict[str, str]:
    return {"hour": str(int(now // 3600)), "day": time.strftime("%Y-%m-%d", time.gmtime(now))}


def _count(settings: Settings, prefix: str, what: str, n: int, now: float | None = None) -> None:
    now = time.time() if now is None else now
    try:
        pipe = _redis(settings).pipeline(transaction=True)
        for window, value in _windows(now).items():
            name = f"{KEY_STATS_KEY}{prefix}:{what}:{window}:{value}"
            pipe.incrby(name, n)
            pipe.expire(name, KEEP_S)
        if what == "requests":
            pipe.set(f"{KEY_STATS_KEY}{prefix}:last_used", f"{now:.3f}", ex=400 * 86400)
        pipe.execute()
    except redis.RedisError as exc:  # statistics never refuse a request; the rate limiter guards Redis being down
        log.warning("key statistics not recorded: %s", exc)


def touch(settings: Settings, prefix: str) -> None:
    """One request made with the key."""
    _count(settings, prefix, "requests", 1)


def add_images(settings: Settings, prefix: str, n: int) -> None:
    """`n` items (image x model) submitted with the key."""
    if n:
        _count(settings, prefix, "images", n)


def read(settings: Settings, prefixes: list[str], now: float | None = None) -> dict[str, dict]:
    """{prefix: {last_used_at, requests_hour, requests_day, images_hour, images_day}} (0 / None when unknown)."""
    now = time.time() if now is None else now
    windows = _windows(now)
    names = []
    for p in prefixes:
        names.append(f"{KEY_STATS_KEY}{p}:last_used")
        names += [f"{KEY_STATS_KEY}{p}:{what}:{w}:{v}" for what in ("requests", "images") for w, v in windows.items()]
    try:
        values = _redis(settings).mget(names) if names else []
    except redis.RedisError as exc:
        log.warning("key statistics unavailable: %s", exc)
        values = [None] * len(names)
    out = {}
    for i, p in enumerate(prefixes):
        last, rh, rd, ih, id_ = values[i * 5 : (i + 1) * 5]
        out[p] = {
            "last_used_at": float(last) if last else None,
            "requests_hour": int(rh or 0),
            "requests_day": int(rd or 0),
            "images_hour": int(ih or 0),
            "images_day": int(id_ or 0),
        }
    return out
