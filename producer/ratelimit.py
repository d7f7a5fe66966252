"""ratelimit: per-API-key request budgets in Redis, one fixed hourly window per key (INCR + EXPIRE in one
transaction)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import redis

from capq.errors import Unavailable
from capq.names import RATE_KEY
from capq.redact import mask_url
from capq.settings import Settings

WINDOW_S = 3600


class LimiterUnavailable(Unavailable, RuntimeError):
    """Redis did not answer; the API refuses (503) rather than serve without limits."""


def unavailable(url: str, exc: Exception) -> LimiterUnavailable:
    return LimiterUnavailable(
        f"rate limiter unavailable: Redis at {mask_url(url)} did not answer ({type(exc).__name__})"
    )


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
        self.redis = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=settings.connect_timeout_s,
            socket_timeout=settings.connect_timeout_s,
        )

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
            raise unavailable(self.url, exc) from exc
        limit = self.limits[tier]
        reset = max(1, math.ceil((window + 1) * WINDOW_S - now))
        return Decision(count <= limit, limit, max(0, limit - count), reset)


class ImageBudget:
    """Images per key per clock hour (`settings.image_limits_per_hour[tier]`), beside the request budget.

    A request takes all its images at once or none: a job that does not fit is refused whole (429), and its
    count is given back, so a refused request costs the caller nothing.
    """

    def __init__(self, settings: Settings, client: redis.Redis | None = None):
        self.url = settings.redis_url
        self.limits = settings.image_limits_per_hour
        self.redis = client or RateLimiter(settings).redis

    def take(self, key_hash: str, tier: str, images: int, now: float | None = None) -> Decision:
        now = time.time() if now is None else now
        window = int(now // WINDOW_S)
        counter = f"{RATE_KEY}images:{key_hash}:{window}"
        limit = self.limits[tier]
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.incrby(counter, images)
            pipe.expire(counter, WINDOW_S + 60)
            count, _ = pipe.execute()
            if count > limit:
                self.redis.decrby(counter, images)
        except redis.RedisError as exc:
            raise unavailable(self.url, exc) from exc
        reset = max(1, math.ceil((window + 1) * WINDOW_S - now))
        return Decision(count <= limit, limit, max(0, limit - (count if count <= limit else count - images)), reset)


class AuthFailures:
    """Failed API keys per client address in a fixed window; past `settings.auth_failure_limit` the address is
    refused (429) before its key is even looked up, so guessing costs the guesser, not the database."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None):
        self.url = settings.redis_url
        self.limit, self.window_s = settings.auth_failure_limit, settings.auth_failure_window_s
        self.redis = client or RateLimiter(settings).redis

    def _counter(self, address: str, now: float) -> tuple[str, int]:
        window = int(now // self.window_s)
        return f"{RATE_KEY}authfail:{address}:{window}", max(1, math.ceil((window + 1) * self.window_s - now))

    def blocked(self, address: str, now: float | None = None) -> int:
        """Seconds until `address` may try again (0: it may try now)."""
        counter, reset = self._counter(address, time.time() if now is None else now)
        try:
            count = int(self.redis.get(counter) or 0)
        except redis.RedisError as exc:
            raise unavailable(self.url, exc) from exc
        return reset if count >= self.limit else 0

    def failed(self, address: str, now: float | None = None) -> None:
        counter, _ = self._counter(address, time.time() if now is None else now)
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.incr(counter)
            pipe.expire(counter, self.window_s + 60)
            pipe.execute()
        except redis.RedisError as exc:
            raise unavailable(self.url, exc) from exc
