"""captions: one caption per image x model x checkpoint x generation config, written idempotently."""

from __future__ import annotations

from datetime import UTC, datetime

from capq.settings import Settings
from storage.db import insert_new, mongo, translated


class CaptionStore:
    """The captions collection. Every write is an insert against its unique key (sha256, model, checkpoint,
    config_hash), so a redelivered task never duplicates."""

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
        """Insert each caption unless its key exists; returns how many were new. Safe under concurrency."""
        if not docs:
            return 0
        now = datetime.now(UTC)
        # Already captioned (a redelivery, or two writers racing on a new key): the stored doc stands.
        return len(docs) - len(insert_new(self.coll, [{"created_at": now, "status": "done", **d} for d in docs]))

    @translated
    def count(self, query: dict | None = None) -> int:
        return self.coll.count_documents(query or {})
