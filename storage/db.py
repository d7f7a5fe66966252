"""db: the MongoDB connection, its collections and their indexes, and error translation."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from pymongo import ASCENDING as ASC
from pymongo import DESCENDING as DESC
from pymongo import IndexModel, MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import AutoReconnect, BulkWriteError, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError

from capq.settings import Settings
from storage.errors import DatabaseUnreachable

T = TypeVar("T")
UNREACHABLE = (ServerSelectionTimeoutError, ConnectionFailure, AutoReconnect, NetworkTimeout)
DUPLICATE_KEY = 11000

# Every field a query filters or sorts on has an index here; creating them is idempotent.
INDEXES: dict[str, list[IndexModel]] = {
    "images": [
        IndexModel([("sha256", ASC)], unique=True),
        IndexModel([("file_names", ASC)]),
        IndexModel([("first_seen", ASC)]),  # issue 15: retention
    ],
    "jobs": [
        IndexModel([("owner", ASC), ("created_at", DESC)]),
        IndexModel(
            [("owner", ASC), ("idempotency_key", ASC)],
            unique=True,
            partialFilterExpression={"idempotency_key": {"$type": "string"}},
        ),
        IndexModel([("state", ASC), ("created_at", DESC)]),
    ],
    # One row per (job, model, preset, image): the unit of work, written once at submission. The $in field
    # (sha256) is last in the keys, so the wire server under test can plan shard lookups on them.
    "job_items": [
        IndexModel([("job_id", ASC), ("model", ASC), ("preset", ASC), ("sha256", ASC)], unique=True),
        IndexModel([("job_id", ASC), ("seq", ASC)]),
        IndexModel([("owner", ASC), ("sha256", ASC)]),
        IndexModel([("sha256", ASC)]),  # issue 15: is an image still referenced (erasure, retention)
        IndexModel([("model", ASC), ("created_at", DESC)]),  # issue 18: arrivals per model (capacity planning)
    ],
    # An item's one result (done, failed, cancelled), written once when it finishes; history reads these.
    "job_results": [
        IndexModel([("job_id", ASC), ("model", ASC), ("preset", ASC), ("sha256", ASC)], unique=True),
        IndexModel([("job_id", ASC), ("state", ASC)]),
        IndexModel([("owner", ASC), ("updated_at", DESC)]),
        IndexModel([("owner", ASC), ("sha256", ASC), ("updated_at", DESC)]),
        IndexModel([("owner", ASC), ("model", ASC), ("updated_at", DESC)]),
        IndexModel([("sha256", ASC)]),  # issue 15: retention removes an image's results
        IndexModel([("caption", ASC)]),  # issue 15: is a caption text still used (erasure keeps its translation)
    ],
    # One caption per image x model x checkpoint x generation config: a redelivered task cannot duplicate it.
    "captions": [
        IndexModel([("sha256", ASC), ("model", ASC), ("checkpoint", ASC), ("config_hash", ASC)], unique=True),
        IndexModel([("model", ASC), ("created_at", DESC)]),
        IndexModel([("model", ASC), ("preset", ASC), ("created_at", DESC)]),
        IndexModel([("job_id", ASC), ("created_at", DESC)]),
        IndexModel([("created_at", DESC)]),
        IndexModel([("caption", ASC)]),  # issue 15: is a caption text still used (erasure keeps its translation)
    ],
    # Pending references (image not submitted yet) use "pending:<file name>" as their sha256 key.
    "references": [
        IndexModel([("sha256", ASC)], unique=True),
        IndexModel([("file_name", ASC)]),
        IndexModel([("imported_at", DESC)]),
        IndexModel([("pending", ASC)]),
    ],
    "evaluations": [
        IndexModel([("model", ASC), ("preset", ASC), ("created_at", DESC)]),
        IndexModel([("created_at", DESC)]),
        # The scheduler's "newest evaluation of this group" lookup.
        IndexModel([("model", ASC), ("checkpoint", ASC), ("config_hash", ASC), ("created_at", DESC)]),
    ],
    # Issue 14: translation memory (one per text x target) and the history of provider outcomes.
    "translations": [
        IndexModel([("text_sha256", ASC), ("target", ASC)], unique=True),
    ],
    "translation_history": [
        IndexModel([("text_sha256", ASC), ("at", DESC)]),
        IndexModel([("at", DESC)]),
    ],
    "api_keys": [
        IndexModel([("key_hash", ASC)], unique=True),
        IndexModel([("owner", ASC)]),
        IndexModel([("prefix", ASC)]),  # `capq keys revoke PREFIX`
    ],
    # Issue 15: erasure, retention, usage
    "image_gc": [IndexModel([("sha256", ASC)], unique=True)],
    "audit": [IndexModel([("owner", ASC), ("started_at", DESC)]), IndexModel([("started_at", DESC)])],
    "usage": [
        IndexModel([("owner", ASC), ("model", ASC), ("device", ASC), ("tier", ASC), ("day", ASC)], unique=True),
        IndexModel([("day", ASC)]),
    ],
    # Issue 13: the API's comparison requests and the evaluation worker's answers; unclaimed ones expire.
    "compare_requests": [IndexModel([("created_at", ASC)], expireAfterSeconds=3600)],
}


class Mongo:
    """A database handle that turns 'cannot reach the server' into DatabaseUnreachable."""

    def __init__(self, settings: Settings):
        self.url = settings.mongo_url
        ms = int(settings.connect_timeout_s * 1000)
        self.client: MongoClient = MongoClient(
            settings.mongo_url,
            serverSelectionTimeoutMS=ms,
            connectTimeoutMS=ms,
            socketTimeoutMS=max(ms, 30_000),
            tz_aware=True,
            appname="capq",
        )
        self.db: Database = self.client[settings.mongo_db]

    def __getitem__(self, name: str):
        return self.db[name]

    def call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except UNREACHABLE as exc:
            raise DatabaseUnreachable(self.url, type(exc).__name__) from exc

    def ping(self) -> None:
        self.call(lambda: self.client.admin.command("ping"))

    def ensure_indexes(self) -> None:
        def go():
            for name, models in INDEXES.items():
                self.db[name].create_indexes(models)

        self.call(go)


@functools.cache
def mongo(settings: Settings) -> Mongo:
    """One client per process and settings; pymongo pools connections inside it."""
    return Mongo(settings)


def translated(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate a store method so pymongo's network errors surface as DatabaseUnreachable."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        return self.mongo.call(lambda: fn(self, *args, **kwargs))

    return wrapper


def insert_new(coll: Collection, docs: list[dict]) -> set[int]:
    """Insert docs unordered against the collection's unique keys; -> positions of the docs whose key was
    already there (those keep the stored doc). For records written once per key (captions, items, results,
    images): idempotent like an upsert, and the server does an index probe instead of a query per doc."""
    if not docs:
        return set()
    try:
        coll.insert_many(docs, ordered=False)
        return set()
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return {e["index"] for e in errors}
