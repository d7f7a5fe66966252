"""captions: one caption per image x model x checkpoint x generation config, written idempotently."""
from __future__ import annotations

from datetime import datetime, timezone

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from capq.settings import Settings
from storage.db import mongo, translated

KEY = ("sha256", "model", "checkpoint", "config_hash")
DUPLICATE_KEY = 11000


class CaptionStore:
    """The captions collection. Every write is an upsert on KEY, so a redelivered task never duplicates."""

    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.coll = self.mongo["captions"]

    @translated
    def existing(self, shas: list[str], model: str, checkpoint: str, config_hash: str) -> dict[str, dict]:
        """Captions already made for these images under this exact model and config (reused, not recomputed)."""
        if not shas:
            return {}
        cur = self.coll.find(
            {"sha256": {"$in": list(shas)}, "model": model, "checkpoint": checkpoint, "config_hash": config_hash},
            {"_id": 0},
        )
        return {doc["sha256"]: doc for doc in cur}

    @translated
    def upsert_many(self, docs: list[dict]) -> int:
        """Insert each caption unless its key exists; returns how many were new. Safe under concurrency."""
        if not docs:
            return 0
        now = datetime.now(timezone.utc)
        ops = [
            UpdateOne({k: d[k] for k in KEY}, {"$setOnInsert": {"created_at": now, "status": "done", **d}}, upsert=True)
            for d in docs
        ]
        try:
            return self.coll.bulk_write(ops, ordered=False).upserted_count
        except BulkWriteError as exc:
            # Two writers upserting the same new key race; the loser gets 11000 and the winner's doc stands.
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return exc.details.get("nUpserted", 0)

    @translated
    def count(self, query: dict | None = None) -> int:
        return self.coll.count_documents(query or {})
