"""comparisons: the API's paired-comparison requests to an evaluation worker, and the worker's answers."""

from __future__ import annotations

from datetime import UTC, datetime

from capq.settings import Settings
from storage.db import mongo, translated

COLLECTION = "compare_requests"  # a TTL index on created_at (storage.db) removes what nobody took within an hour


class ComparisonStore:
    """One document per request: opened by the API, answered by an evaluation worker, then taken (removed) by the
    API. An answer is {"result": dict} (the comparison), {"error": message} (the models cannot be compared) or
    {"failure": message} (the worker failed)."""

    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.coll = self.mongo[COLLECTION]

    @translated
    def open(self, request_id: str, a: str, b: str, preset: str | None) -> None:
        self.coll.insert_one({"_id": request_id, "a": a, "b": b, "preset": preset, "created_at": datetime.now(UTC)})

    @translated
    def waiting(self, request_id: str) -> bool:
        """Whether the request still awaits an answer (False once answered, or once its sender gave up)."""
        doc = self.coll.find_one({"_id": request_id}, {"answered_at": 1})
        return doc is not None and "answered_at" not in doc

    @translated
    def answer(
        self, request_id: str, *, result: dict | None = None, error: str | None = None, failure: str | None = None
    ) -> bool:
        """Store one outcome; False when the request is gone (its sender gave up, so nobody reads it)."""
        outcome = {"result": result} if error is None and failure is None else {"error": error, "failure": failure}
        done = self.coll.update_one({"_id": request_id}, {"$set": {**outcome, "answered_at": datetime.now(UTC)}})
        return done.matched_count == 1

    @translated
    def take(self, request_id: str) -> dict | None:
        """The answer, removing the request; None while it is unanswered."""
        doc = self.coll.find_one_and_delete({"_id": request_id, "answered_at": {"$exists": True}})
        return _outcome(doc)

    @translated
    def withdraw(self, request_id: str) -> dict | None:
        """Give up on the request (a worker that picks it up later skips it); its answer if one came meanwhile."""
        return _outcome(self.coll.find_one_and_delete({"_id": request_id}))


def _outcome(doc: dict | None) -> dict | None:
    if doc is None or "answered_at" not in doc:
        return None
    return {k: doc[k] for k in ("result", "error", "failure") if doc.get(k) is not None}
