"""waiting: why a job is not moving (no worker for its model, dead letters, a service unreachable), in words."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import redis

from capq.names import DLQ_KEY, MODELS_SEEN_KEY, OUTAGES_KEY
from capq.settings import Settings
from capq.shard import shard_of

OPEN_STATES = ("submitting", "queued", "running")


def _client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.connect_timeout_s,
        socket_timeout=settings.connect_timeout_s,
        decode_responses=True,
    )


def _hhmm(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M UTC")


def models_offline(settings: Settings, models: list[str], client: redis.Redis | None = None) -> dict[str, float | None]:
    """{model: its workers' last heartbeat (None: never seen)} for the models with no worker online now."""
    client = client or _client(settings)
    seen = dict(zip(models, client.hmget(MODELS_SEEN_KEY, models))) if models else {}
    now = time.time()
    return {
        m: (float(ts) if ts else None)
        for m, ts in seen.items()
        if not ts or now - float(ts) > settings.worker_lost_after_s
    }


def offline_message(model: str, last_seen: float | None) -> str:
    if last_seen is None:
        return f"no worker online for model {model} (none seen yet; start one: capq worker --model {model})"
    return f"no worker online for model {model} since {_hhmm(last_seen)}"


def why_waiting(settings: Settings, job: dict, client: redis.Redis | None = None) -> str | None:
    """Why this unfinished job may not be progressing, or None. Reads Redis only (a few keys)."""
    if job.get("state") not in OPEN_STATES or not job.get("counts", {}).get("queued"):
        return None
    client = client or _client(settings)
    try:
        reasons = [offline_message(m, ts) for m, ts in models_offline(settings, job["models"], client).items()]
        for service, since in sorted(client.hgetall(OUTAGES_KEY).items()):
            reasons.append(
                f"waiting on {'S3' if service == 'object store' else service} "
                f"(unreachable since {_hhmm(float(since))}); retried on its own once it answers"
            )
        job_id = job.get("job_id", job.get("_id"))
        letters = [
            (e, s) for e in map(json.loads, client.hvals(DLQ_KEY)) if (s := shard_of(e["args"])) and s.job_id == job_id
        ]
        if letters:
            n = sum(len(s.shas) for _, s in letters)
            reasons.append(f"{n} items in dead letters: {letters[0][0]['error'][:200]} (capq dlq list)")
    except redis.RedisError as exc:
        return f"the queue (Redis) does not answer: {type(exc).__name__}"
    return "; ".join(reasons) or None


def annotate(settings: Settings, jobs: list[dict]) -> list[dict]:
    """Public jobs with `waiting` set on those not progressing (one Redis client for the lot)."""
    client = _client(settings)
    for job in jobs:
        reason = why_waiting(settings, job, client)
        if reason:
            job["waiting"] = reason
    return jobs
