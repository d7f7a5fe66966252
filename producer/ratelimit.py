"""ratelimit: per-API-key request budgets in Redis, one fixed hourly window per key (INCR + EXPIRE in one transaction)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import redis

from capq.names import RATE_KEY
from capq.settings import Settings

WINDOW_S = 3600


class LimiterUnavailable(RuntimeError):
    """Redis did not answer; the API refuses (503) rather than serve without limits."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int  # seconds until the window resets


class RateLimiter:
    """Count requests per key hash in the current clock hour; `settings.rate_limits_per_hour[tier]` are allowed.

    A fixed window (not sliding) keeps it to one counter per key per hour. Its known cost: a client may spend
    one window's budget at the end of an hour and the next at the start, so a burst of up to twice the limit.
    """

    def __init__(self, settings: Settings):
        self.url = settings.redis_url
        self.limits = settings.rate_limits_per_hour
        self.redis = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=settings.connect_timeout_s,
                                          socket_timeout=settings.connect_timeout_s)

    def hit(self, key_hash: str, tier: str, now: float | None = None) -> Decision:
        """Count one request and say whether it is within the budget."""
        now = time.time() if now is None else now
        window = int(now // WINDOW_S)
        counter = f"{RATE_KEY}{key_hash}:{window}"
        try:
            # MULTI/EXEC: the counter never exists without its expiry, even if this process dies in between.
            pipe = self.redis.pipeline(transaction=True)
            pipe.incr(counter)
            pipe.expire(counter, WINDOW_S + 60)
            count, _ = pipe.execute()
        except redis.RedisError as exc:
            raise LimiterUnavailable(f"rate limiter unavailable: Redis at {self.url} did not answer ({exc})") from exc
        limit = self.limits[tier]
        reset = max(1, math.ceil((window + 1) * WINDOW_S - now))
        return Decision(count <= limit, limit, max(0, limit - count), reset)
