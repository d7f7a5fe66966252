"""aliases: model aliases (a name over weighted models, e.g. caption-default = blip:90, git:10) in MongoDB."""

from __future__ import annotations

from datetime import UTC, datetime

from capq.settings import Settings
from storage.db import mongo, translated


class AliasStore:
    """The model_aliases collection: {_id: name, arms: [{model, weight}], updated_at, updated_by}. Read on every
    submission (no cache), so a weight change takes effect at the next submission without a restart."""

    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.coll = self.mongo["model_aliases"]

    @translated
    def set(self, name: str, arms: list[dict], by: str) -> dict:
        doc = {"arms": arms, "updated_at": datetime.now(UTC), "updated_by": by}
        self.coll.update_one({"_id": name}, {"$set": doc, "$push": {"history": doc}}, upsert=True)
        return {"name": name, **doc}

    @translated
    def get_many(self, names: list[str]) -> dict[str, list[dict]]:
        """{name: arms} of those names that are aliases."""
        return {d["_id"]: d["arms"] for d in self.coll.find({"_id": {"$in": list(names)}}, {"arms": 1})}

    @translated
    def list(self) -> list[dict]:
        return [
            {"name": d["_id"], "arms": d["arms"], "updated_at": d["updated_at"], "updated_by": d.get("updated_by")}
            for d in self.coll.find({}, {"history": 0}).sort("_id", 1)
        ]

    @translated
    def delete(self, name: str) -> bool:
        return self.coll.delete_one({"_id": name}).deleted_count == 1
