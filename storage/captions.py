"""captions: one caption per image x model x checkpoint x generation config, written idempotently."""
from __future__ import annotations

from datetime import datetime, timezone

from pymongo.errors import BulkWriteError

from capq.settings import Settings
from storage.db import mongo, translated

KEY = ("sha256", "model", "checkpoint", "config_hash")
DUPLICATE_KEY = 11000


class CaptionStore:
    """The captions collection. Every write is an insert against the unique KEY, so a redelivered task never duplicates."""

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
    def insert_new(self, docs: list[dict]) -> int:
        """Insert each caption unless its key exists; returns how many were new. Safe under concurrency.

        A plain unordered insert against the unique key, not an upsert: same outcome (the first caption
        for a key stands), and the database does an index probe instead of a query plus a write per doc.
        """
        if not docs:
            return 0
        now = datetime.now(timezone.utc)
        try:
            return len(self.coll.insert_many([{"created_at": now, "status": "done", **d} for d in docs],
                                             ordered=False).inserted_ids)
        except BulkWriteError as exc:
            # Already captioned (a redelivery, or two writers racing on a new key): the stored doc stands.
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return exc.details.get("nInserted", 0)

    @translated
    def count(self, query: dict | None = None) -> int:
        return self.coll.count_documents(query or {})
