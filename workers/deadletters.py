"""deadletters: work that kept failing, kept in Redis with its error until an operator re-drives it."""

from __future__ import annotations

import json
import time
import uuid

import redis

from capq.names import DLQ_KEY
from capq.settings import Settings


class DeadLetters:
    """A Redis hash id -> {task, args, queue, error, failed_at, retries}; survives worker restarts."""

    def __init__(self, settings: Settings):
        self.redis = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=settings.connect_timeout_s, decode_responses=True
        )

    def add(self, task: str, args: list, queue: str, error: str, retries: int) -> str:
        entry_id = uuid.uuid4().hex[:12]
        entry = {
            "id": entry_id,
            "task": task,
            "args": args,
            "queue": queue,
            "error": error[:2000],
            "retries": retries,
            "failed_at": time.time(),
        }
        self.redis.hset(DLQ_KEY, entry_id, json.dumps(entry))
        return entry_id

    def list(self) -> list[dict]:
        entries = [json.loads(v) for v in self.redis.hvals(DLQ_KEY)]
        return sorted(entries, key=lambda e: e["failed_at"])

    def retry(self, app, entry_ids: list[str] | None = None) -> list[str]:
        """Re-queue entries (all when none named) on their original queue; each leaves the store once sent."""
        wanted = entry_ids or list(self.redis.hkeys(DLQ_KEY))
        sent = []
        for entry_id in wanted:
            raw = self.redis.hget(DLQ_KEY, entry_id)
            if raw is None:
                raise KeyError(f"no dead letter {entry_id!r}; `capq dlq list` shows the ids")
            entry = json.loads(raw)
            app.send_task(entry["task"], args=entry["args"], queue=entry["queue"])
            # Removed only after the send: a crash in between re-sends, which the idempotent tasks absorb.
            self.redis.hdel(DLQ_KEY, entry_id)
            sent.append(entry_id)
        return sent
