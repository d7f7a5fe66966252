"""usage: images, reused captions and GPU-seconds per owner, model, device, tier and UTC day ($inc by workers)."""

from __future__ import annotations

from datetime import UTC, datetime

from pymongo import UpdateOne

from capq.settings import Settings
from storage.db import mongo, translated

BY = ("model", "day", "tier", "owner", "device")


def day_of(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d")


class UsageStore:
    """The usage collection: one row per (owner, model, device, tier, day) with running sums.

    Workers add to it with $inc as they record results, so a report reads a few rows per owner and day
    instead of every result, and it outlives results removed by retention. The per-result records
    (job_results.gpu_s) stay the detail it is checked against.
    """

    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.coll = self.mongo["usage"]
        self.results = self.mongo["job_results"]

    @translated
    def add(
        self, owner: str, tier: str, model: str, device: str, results: list[dict], at: datetime | None = None
    ) -> None:
        """Add newly recorded results ({state, reused?, gpu_s?}) to the day's row; failures and cancels cost nothing."""
        done = [r for r in results if r.get("state") == "done"]
        if not done:
            return
        day = day_of(at or datetime.now(UTC))
        reused = sum(1 for r in done if r.get("reused"))
        inc = {"images": len(done) - reused, "reused": reused, "gpu_s": float(sum(r.get("gpu_s") or 0.0 for r in done))}
        key = {"owner": owner, "model": model, "device": device, "tier": tier, "day": day}
        self.coll.bulk_write([UpdateOne(key, {"$inc": inc}, upsert=True)])

    @translated
    def rows(self, owner: str | None = None, since_day: str | None = None) -> list[dict]:
        query: dict = {}
        if owner is not None:
            query["owner"] = owner
        if since_day is not None:
            query["day"] = {"$gte": since_day}
        return list(self.coll.find(query, {"_id": 0}))

    @translated
    def job_gpu_s(self, job_id: str) -> float:
        """GPU-seconds the job's results cost (reused captions cost nothing)."""
        rows = list(
            self.results.aggregate(
                [{"$match": {"job_id": job_id}}, {"$group": {"_id": None, "gpu_s": {"$sum": "$gpu_s"}}}]
            )
        )
        return float(rows[0]["gpu_s"] or 0.0) if rows else 0.0

    @translated
    def delete_owner(self, owner: str) -> int:
        return self.coll.delete_many({"owner": owner}).deleted_count
