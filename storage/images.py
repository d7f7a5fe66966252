"""images: one record per distinct image (by sha256) with its size, format and dimensions."""

from __future__ import annotations

from datetime import UTC, datetime

from pymongo import UpdateOne

from capq.settings import Settings
from storage.db import insert_new, mongo, translated


class ImageRecords:
    """The images collection: written once per sha256, file names accumulated."""

    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.coll = self.mongo["images"]

    @translated
    def record_many(self, images: list[dict]) -> None:
        """Record {sha256, size, format, width, height, file_name?}: first_seen is set once, file names add up.

        New images are plain inserts against the unique sha256 (the common case, and far cheaper than
        upserts); only images already known get their file name added by an update.
        """
        if not images:
            return
        now = datetime.now(UTC)
        docs = [
            {
                "sha256": img["sha256"],
                "size": img["size"],
                "format": img["format"],
                "width": img["width"],
                "height": img["height"],
                "first_seen": now,
                "file_names": [img["file_name"]] if img.get("file_name") else [],
            }
            for img in images
        ]
        known = insert_new(self.coll, docs)
        ops = [
            UpdateOne({"sha256": images[n]["sha256"]}, {"$addToSet": {"file_names": images[n]["file_name"]}})
            for n in sorted(known)
            if images[n].get("file_name")
        ]
        if ops:
            self.coll.bulk_write(ops, ordered=False)

    @translated
    def get(self, sha256: str) -> dict | None:
        return self.coll.find_one({"sha256": sha256}, {"_id": 0})

    @translated
    def count(self, sha256: str) -> int:
        return self.coll.count_documents({"sha256": sha256})
