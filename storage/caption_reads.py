"""caption_reads: the read-only caption queries evaluation needs (writes live in storage.captions)."""

from __future__ import annotations

from datetime import datetime

from capq.settings import Settings
from storage.db import mongo, translated


def caption_filter(
    model: str | None = None, preset: str | None = None, job_id: str | None = None, since: datetime | None = None
) -> dict:
    """The query for finished captions, narrowed by whichever filters are given."""
    query: dict = {"status": "done"}
    if model:
        query["model"] = model
    if preset:
        query["preset"] = preset
    if job_id:
        query["job_id"] = job_id
    if since:
        query["created_at"] = {"$gte": since}
    return query


class CaptionReads:
    """Finished captions grouped per (model, checkpoint, config_hash), and the captions of one group."""

    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.coll = self.mongo["captions"]

    @translated
    def groups(self, **filters) -> list[dict]:
        """[{model, checkpoint, config_hash, presets, captions, last_caption_at}] sorted by model, checkpoint.

        :param filters: model, preset, job_id, since, as for caption_filter.
        """
        pipeline = [
            {"$match": caption_filter(**filters)},
            {
                "$group": {
                    "_id": {"model": "$model", "checkpoint": "$checkpoint", "config_hash": "$config_hash"},
                    "captions": {"$sum": 1},
                    "last_caption_at": {"$max": "$created_at"},
                    "presets": {"$addToSet": "$preset"},
                }
            },
        ]
        out = [
            {
                **g["_id"],
                "presets": sorted(p for p in g["presets"] if p),
                "captions": g["captions"],
                "last_caption_at": g["last_caption_at"],
            }
            for g in self.coll.aggregate(pipeline)
        ]
        return sorted(out, key=lambda g: (str(g["model"]), str(g["checkpoint"]), str(g["config_hash"])))

    @translated
    def captions(self, model: str, checkpoint: str | None, config_hash: str | None, **filters) -> list[dict]:
        """[{sha256, caption, created_at}] of one group's finished captions (filters as for groups)."""
        query = {**caption_filter(model=model, **filters), "checkpoint": checkpoint, "config_hash": config_hash}
        return list(self.coll.find(query, {"_id": 0, "sha256": 1, "caption": 1, "created_at": 1}))
