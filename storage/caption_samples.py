"""caption_samples: the newest production captions of a model, the sample reference-free quality is measured on."""

from __future__ import annotations

from pymongo import DESCENDING

from capq.settings import Settings
from storage.db import mongo, translated

FIELDS = {
    "_id": 0,
    "sha256": 1,
    "caption": 1,
    "checkpoint": 1,
    "preset": 1,
    "config_hash": 1,
    "job_id": 1,
    "created_at": 1,
}


class CaptionSamples:
    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.coll = self.mongo["captions"]

    @translated
    def newest(self, model: str, limit: int, job_ids: list[str] | None = None) -> list[dict]:
        """Up to `limit` finished captions of `model`, newest first (index model, created_at), optionally only
        those made by the given jobs."""
        query: dict = {"model": model, "status": "done"}
        if job_ids is not None:
            query["job_id"] = {"$in": list(job_ids)}
        return list(self.coll.find(query, FIELDS, sort=[("created_at", DESCENDING)], limit=limit))

    @translated
    def alias_jobs(self, alias: str, limit: int = 1000) -> list[str]:
        """Ids of the newest jobs submitted to `alias` (their record keeps the alias's weights at submission)."""
        cur = self.mongo["jobs"].find(
            {f"aliases.{alias}": {"$exists": True}}, {"_id": 1}, sort=[("created_at", DESCENDING)], limit=limit
        )
        return [d["_id"] for d in cur]
