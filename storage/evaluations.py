"""evaluations: one stored document per evaluation run of one (model, checkpoint, config) group."""
from __future__ import annotations

from pymongo import DESCENDING

from capq.settings import Settings
from storage.db import mongo, translated


def _public(doc: dict) -> dict:
    doc = dict(doc)
    doc["id"] = str(doc.pop("_id"))
    return doc


class EvaluationStore:
    """The evaluations collection: append-only, newest first when read."""

    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.coll = self.mongo["evaluations"]

    @translated
    def insert(self, doc: dict) -> dict:
        """Store one evaluation; returns it with its "id" (a string)."""
        stored = dict(doc)
        self.coll.insert_one(stored)
        return _public(stored)

    @translated
    def latest(self, model: str, checkpoint: str | None, config_hash: str | None) -> dict | None:
        """The newest evaluation of this group over all its captions (no job or since filter), if any."""
        doc = self.coll.find_one(
            {"model": model, "checkpoint": checkpoint, "config_hash": config_hash,
             "scope.job_id": None, "scope.since": None},
            sort=[("created_at", DESCENDING)],
        )
        return _public(doc) if doc else None

    @translated
    def history(self, model: str | None = None, limit: int = 20) -> list[dict]:
        """The newest `limit` evaluations, optionally of one model."""
        query = {"model": model} if model else {}
        return [_public(d) for d in self.coll.find(query, sort=[("created_at", DESCENDING)], limit=limit)]

    # Issue 18: evaluation kinds beside reference scores ("health", "clipscore"); documents without one are
    # reference evaluations.
    @translated
    def newest(self, model: str, kind: str | None = None) -> dict | None:
        """The newest whole-history evaluation of `model` of this kind (None: reference scores), if any."""
        doc = self.coll.find_one({"model": model, "kind": kind, "scope.job_id": None, "scope.since": None},
                                 sort=[("created_at", DESCENDING)])
        return _public(doc) if doc else None
