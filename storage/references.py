"""references: reference captions per image (by sha256), and those still waiting for their image to be submitted."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pymongo import DESCENDING, DeleteOne, ReplaceOne

from capq.settings import Settings
from storage.db import mongo, translated

# A reference whose file name matches no submitted image yet is kept under this key instead of a sha256:
# the unique sha256 index then also keeps one pending entry per file name.
PENDING_PREFIX = "pending:"
# Large $in lists are slow on some MongoDB-compatible servers (the test server's cost grows with the
# square of the list); a projected scan is linear. Above this share of the collection we scan instead.
_SCAN_SHARE = 0.1
_CHUNK = 100


def pending_key(file_name: str) -> str:
    return PENDING_PREFIX + file_name


def find_by_values(coll, field: str, values: Iterable, projection: dict) -> list[dict]:
    """Documents whose `field` (a value or an array) holds any of `values`, in chunks or by one scan."""
    wanted = set(values)
    if not wanted:
        return []
    if len(wanted) > _SCAN_SHARE * coll.estimated_document_count():
        docs = []
        for doc in coll.find({}, projection):
            got = doc.get(field)
            if (set(got) & wanted) if isinstance(got, list) else (got in wanted):
                docs.append(doc)
        return docs
    ordered = sorted(wanted)
    return [
        doc
        for start in range(0, len(ordered), _CHUNK)
        for doc in coll.find({field: {"$in": ordered[start : start + _CHUNK]}}, projection)
    ]


class ReferenceStore:
    """The references collection: {sha256, file_name, captions, source, imported_at[, pending]} per image."""

    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.coll = self.mongo["references"]
        self.images = self.mongo["images"]

    @translated
    def images_by_file_name(self, names: Iterable[str]) -> dict[str, set[str]]:
        """{file name: sha256s of the submitted images that carry it} for the names that match any image."""
        wanted, out = set(names), {}
        for doc in find_by_values(self.images, "file_names", wanted, {"_id": 0, "sha256": 1, "file_names": 1}):
            for name in set(doc.get("file_names") or ()) & wanted:
                out.setdefault(name, set()).add(doc["sha256"])
        return out

    @translated
    def file_names_of(self, shas: Iterable[str]) -> dict[str, list[str]]:
        """{sha256: file names it was submitted under} for these images."""
        docs = find_by_values(self.images, "sha256", shas, {"_id": 0, "sha256": 1, "file_names": 1})
        return {d["sha256"]: list(d.get("file_names") or ()) for d in docs}

    @translated
    def get(self, keys: Iterable[str]) -> dict[str, dict]:
        """{key: document} for these sha256s or pending keys."""
        docs = find_by_values(self.coll, "sha256", keys, {"_id": 0})
        return {d["sha256"]: d for d in docs}

    @translated
    def captions_for(self, shas: Iterable[str]) -> dict[str, list[str]]:
        """{sha256: reference captions} for the images among `shas` that have references."""
        docs = find_by_values(self.coll, "sha256", shas, {"_id": 0, "sha256": 1, "captions": 1})
        return {d["sha256"]: d["captions"] for d in docs}

    @translated
    def write(self, upserts: list[dict], deletes: Iterable[str] = ()) -> None:
        """Replace (or insert) whole documents by their sha256 key, then delete the given keys."""
        ops = [ReplaceOne({"sha256": d["sha256"]}, d, upsert=True) for d in upserts]
        ops += [DeleteOne({"sha256": key}) for key in deletes]
        if ops:
            # Ordered: a resolved reference is written before its pending entry goes away.
            self.coll.bulk_write(ops, ordered=True)

    @translated
    def last_import_at(self) -> datetime | None:
        doc = self.coll.find_one({}, {"_id": 0, "imported_at": 1}, sort=[("imported_at", DESCENDING)])
        return doc["imported_at"] if doc else None
