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
            {
                "model": model,
                "checkpoint": checkpoint,
                "config_hash": config_hash,
                "scope.job_id": None,
                "scope.since": None,
            },
            sort=[("created_at", DESCENDING)],
        )
        return _public(doc) if doc else None

    @translated
    def history(self, model: str | None = None, limit: int = 20) -> list[dict]:
        """The newest `limit` evaluations, optionally of one model."""
        # Comparisons of an alias's arms (kind "alias", issue 18) are not runs of one model: newest_alias_comparison.
        query = {"model": model} if model else {"kind": {"$ne": "alias"}}
        # Per-image statistics (issue 18) stay out: long, and they name images of every owner.
        return [
            _public(d)
            for d in self.coll.find(
                query, {"per_image": 0, "per_image_stats": 0}, sort=[("created_at", DESCENDING)], limit=limit
            )
        ]

    # Issue 18: evaluation kinds beside reference scores ("health", "clipscore"); documents without one are
    # reference evaluations.
    @translated
    def newest(self, model: str, kind: str | None = None) -> dict | None:
        """The newest whole-history evaluation of `model` of this kind (None: reference scores), if any."""
        doc = self.coll.find_one(
            {"model": model, "kind": kind, "scope.job_id": None, "scope.since": None},
            {"per_image": 0, "per_image_stats": 0},
            sort=[("created_at", DESCENDING)],
        )
        return _public(doc) if doc else None

    # Issue 18 (finish): the evaluations a new one is tested against for a significant drop (evaluation.drop).
    @translated
    def trailing(self, model: str, kind: str | None, since, before, limit: int = 50) -> list[dict]:
        """Up to `limit` whole-history evaluations of `model` and `kind` created in [since, before), newest first,
        with only their per-image statistics."""
        query = {
            "model": model,
            "kind": kind,
            "scope.job_id": None,
            "scope.since": None,
            "created_at": {"$gte": since, "$lt": before},
        }
        fields = {"kind": 1, "per_image": 1, "per_image_stats": 1, "created_at": 1}
        return [_public(d) for d in self.coll.find(query, fields, sort=[("created_at", DESCENDING)], limit=limit)]

    @translated
    def newest_alias_comparison(self, alias: str) -> dict | None:
        """The newest stored comparison of an alias's arms (kind "alias")."""
        doc = self.coll.find_one({"kind": "alias", "alias": alias}, sort=[("created_at", DESCENDING)])
        return _public(doc) if doc else None
