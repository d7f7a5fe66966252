"""images: one record per distinct image (by sha256) with its size, format and dimensions."""
from __future__ import annotations

from datetime import datetime, timezone

from pymongo import UpdateOne

from capq.settings import Settings
from storage.db import mongo, translated


class ImageRecords:
    """The images collection: written once per sha256, file names accumulated."""

    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.coll = self.mongo["images"]

    @translated
    def record_many(self, images: list[dict]) -> None:
        """Upsert {sha256, size, format, width, height, file_name?} records; first_seen is set once."""
        if not images:
            return
        now = datetime.now(timezone.utc)
        ops = []
        for img in images:
            update = {"$setOnInsert": {
                "sha256": img["sha256"], "size": img["size"], "format": img["format"],
                "width": img["width"], "height": img["height"], "first_seen": now,
            }}
            if img.get("file_name"):
                update["$addToSet"] = {"file_names": img["file_name"]}
            ops.append(UpdateOne({"sha256": img["sha256"]}, update, upsert=True))
        self.coll.bulk_write(ops, ordered=False)

    @translated
    def get(self, sha256: str) -> dict | None:
        return self.coll.find_one({"sha256": sha256}, {"_id": 0})

    @translated
    def count(self, sha256: str) -> int:
        return self.coll.count_documents({"sha256": sha256})
