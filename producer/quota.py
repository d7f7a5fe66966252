"""quota: an optional daily item quota per tier (CAPQ_DAILY_IMAGE_QUOTAS), counted per owner and UTC day in Redis."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime

import redis

from capq.names import QUOTA_KEY
from capq.settings import Settings
from producer.errors import BadInput
from storage.errors import ServiceUnreachable


class QuotaUnreachable(ServiceUnreachable):
    service = "quota counter (Redis)"


class QuotaExceeded(BadInput):
    """The owner's items for today are used up: HTTP 429 with the reset time; the CLI exits 2 with it."""

    status = 429

    def __init__(self, owner: str, tier: str, quota: int, used: int, reset_at: datetime):
        self.reset_at = reset_at
        self.retry_after_s = max(1, int((reset_at - datetime.now(UTC)).total_seconds()))
        super().__init__(
            f"daily quota reached: tier {tier} allows {quota} image(s) x model(s) per day and owner "
            f"{owner} has submitted {used} today; it resets at {reset_at.isoformat()} "
            f"(in {self.retry_after_s}s), or ask for a higher tier"
        )


@functools.cache
def _redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=settings.connect_timeout_s, socket_timeout=settings.connect_timeout_s
    )


def _day(now: float) -> tuple[str, datetime]:
    day = int(now // 86400)
    return time.strftime("%Y-%m-%d", time.gmtime(now)), datetime.fromtimestamp((day + 1) * 86400, UTC)


def used_today(settings: Settings, owner: str, now: float | None = None) -> int:
    day, _ = _day(time.time() if now is None else now)
    try:
        return int(_redis(settings).get(f"{QUOTA_KEY}{owner}:{day}") or 0)
    except redis.RedisError as exc:
        raise QuotaUnreachable(settings.redis_url, str(exc)) from exc


def check(settings: Settings, owner: str, tier: str, now: float | None = None) -> None:
    """Raise QuotaExceeded when `owner` has used up `tier`'s daily quota. A submission that starts under the
    quota is taken whole, so a day may end over it by at most one submission."""
    quota = settings.daily_image_quotas.get(tier)
    if quota is None:
        return
    now = time.time() if now is None else now
    used = used_today(settings, owner, now)
    if used >= quota:
        raise QuotaExceeded(owner, tier, quota, used, _day(now)[1])


def charge(settings: Settings, owner: str, items: int, now: float | None = None) -> None:
    """Count `items` newly queued for `owner` today (whatever the tier: quotas differ, the count is one)."""
    if not items or not settings.daily_image_quotas:
        return
    day, _ = _day(time.time() if now is None else now)
    name = f"{QUOTA_KEY}{owner}:{day}"
    try:
        pipe = _redis(settings).pipeline(transaction=True)
        pipe.incrby(name, items)
        pipe.expire(name, 2 * 86400)
        pipe.execute()
    except redis.RedisError as exc:
        raise QuotaUnreachable(settings.redis_url, str(exc)) from exc
