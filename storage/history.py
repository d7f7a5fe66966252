"""history: an owner's captions over time, read from job results, and which images an owner has submitted."""

from __future__ import annotations

from datetime import datetime

from bson import ObjectId

from capq.settings import Settings
from storage.db import mongo, translated

FIELDS = {
    "_id": 1,
    "job_id": 1,
    "sha256": 1,
    "file_name": 1,
    "model": 1,
    "preset": 1,
    "caption": 1,
    "state": 1,
    "error": 1,
    "checkpoint": 1,
    "updated_at": 1,
    "meta": 1,
}


class CaptionHistory:
    """Queries keyed by owner over job_items and job_results; every filter here has an index in storage.db."""

    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.items = self.mongo["job_items"]
        self.results = self.mongo["job_results"]

    @translated
    def owned_shas(self, owner: str, shas: list[str]) -> set[str]:
        """The subset of `shas` that `owner` has submitted in any job (index owner, sha256)."""
        if not shas:
            return set()
        cur = self.items.find({"owner": owner, "sha256": {"$in": list(shas)}}, {"_id": 0, "sha256": 1})
        return {doc["sha256"] for doc in cur}

    @translated
    def find(
        self,
        owner: str,
        *,
        sha256: str | None = None,
        model: str | None = None,
        job_id: str | None = None,
        since: datetime | None = None,
        before: tuple[datetime, str] | None = None,
        skip: int = 0,
        limit: int = 50,
    ) -> list[dict]:
        """Finished captions of `owner`, newest first; `before` is a keyset cursor (updated_at, result id).

        Values arrive already checked as plain strings/datetimes (producer.queries does that), so none can
        carry a query operator.
        """
        query: dict = {"owner": owner, "state": "done"}
        if sha256 is not None:
            query["sha256"] = sha256
        if model is not None:
            query["model"] = model
        if job_id is not None:
            query["job_id"] = job_id
        if since is not None:
            query["updated_at"] = {"$gte": since}
        if before is not None:
            at, item_id = before
            # Ties on updated_at are broken by _id, so a page boundary never skips or repeats an item.
            query["$or"] = [{"updated_at": {"$lt": at}}, {"updated_at": at, "_id": {"$lt": ObjectId(item_id)}}]
        cur = self.results.find(query, FIELDS).sort([("updated_at", -1), ("_id", -1)]).skip(skip).limit(limit)
        return list(cur)

    @translated
    def owned_names(self, owner: str, shas: list[str]) -> dict[str, str | None]:
        """{sha256: the file name `owner` first gave it} for the subset of `shas` that `owner` has submitted.
        Names come from the owner's own items only: another owner's name for the same bytes never shows."""
        if not shas:
            return {}
        names: dict[str, str | None] = {}
        cur = self.items.find(
            {"owner": owner, "sha256": {"$in": list(shas)}}, {"_id": 0, "sha256": 1, "file_name": 1}
        ).sort("created_at", 1)
        for doc in cur:
            names.setdefault(doc["sha256"], doc.get("file_name"))
        return names

    @translated
    def captioned_shas(self, owner: str, shas: list[str], model: str, preset: str) -> set[str]:
        """The subset of `shas` that `owner` already has a finished caption of, for this model and preset."""
        if not shas:
            return set()
        cur = self.results.find(
            {"owner": owner, "sha256": {"$in": list(shas)}, "model": model, "preset": preset, "state": "done"},
            {"_id": 0, "sha256": 1},
        )
        return {doc["sha256"] for doc in cur}
