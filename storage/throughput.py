"""throughput: captions made (and, issue 18, images submitted) per model over a recent window, from MongoDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from capq.settings import Settings
from storage.db import mongo, translated


class Throughput:
    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.coll = self.mongo["captions"]

    @translated
    def per_model(self, models: list[str], window_s: int) -> dict[str, int]:
        """{model: captions created in the last window_s seconds} (index model, created_at)."""
        since = datetime.now(UTC) - timedelta(seconds=window_s)
        return {m: self.coll.count_documents({"model": m, "created_at": {"$gte": since}}) for m in models}

    @translated
    def arrivals(self, models: list[str], window_s: int) -> dict[str, int]:
        """{model: job items submitted in the last window_s seconds} (index job_items model, created_at): the work
        arriving at each model's queues, alias splits resolved."""
        since = datetime.now(UTC) - timedelta(seconds=window_s)
        items = self.mongo["job_items"]
        return {m: items.count_documents({"model": m, "created_at": {"$gte": since}}) for m in models}
