"""jobs: job records and their items (image x model x preset), the truth behind every job counter."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from capq.settings import Settings
from storage.db import mongo, translated
from storage.errors import NotFound

DUPLICATE_KEY = 11000
ITEM_STATES = ("queued", "done", "failed", "cancelled")
OPEN = "queued"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    """jobs + job_items. Items move queued -> done|failed|cancelled once; counts are derived from items."""

    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.jobs = self.mongo["jobs"]
        self.items = self.mongo["job_items"]

    @translated
    def create(self, owner: str, tier: str, models: list[str], preset: str,
               job_id: str | None = None, idempotency_key: str | None = None, meta: dict | None = None) -> tuple[dict, bool]:
        """Create a job, or return the existing one for the same id or (owner, idempotency key). -> (job, created)."""
        if job_id:
            found = self.jobs.find_one({"_id": job_id})
            if found:
                return found, False
        if idempotency_key:
            found = self.jobs.find_one({"owner": owner, "idempotency_key": idempotency_key})
            if found:
                return found, False
        now = _now()
        doc = {
            "_id": job_id or new_job_id(), "owner": owner, "tier": tier, "models": list(models), "preset": preset,
            "state": "submitting", "counts": {s: 0 for s in ITEM_STATES} | {"total": 0}, "rejected": [],
            "created_at": now, "updated_at": now, "finished_at": None, **(meta or {}),
        }
        if idempotency_key:
            doc["idempotency_key"] = idempotency_key
        try:
            self.jobs.insert_one(doc)
        except DuplicateKeyError:
            # Two submissions with the same key raced: the first one's job is the job.
            query = {"_id": doc["_id"]} if not idempotency_key else {"owner": owner, "idempotency_key": idempotency_key}
            return self.jobs.find_one(query), False
        return doc, True

    @translated
    def get(self, job_id: str) -> dict:
        job = self.jobs.find_one({"_id": job_id})
        if job is None:
            raise NotFound(f"no job {job_id!r}; `capq jobs` lists yours")
        return job

    @translated
    def add_items(self, job_id: str, owner: str, items: list[dict]) -> list[dict]:
        """Add {sha256, model, preset, file_name, meta?} items; returns only those new to the job (to enqueue).

        Each new item takes the next number of the job's sequence: enqueueing walks that sequence with
        one cursor on the job, instead of marking every item sent. Numbers are given model by model, so
        each model's items form runs that become whole shards.
        """
        if not items:
            return []
        items = sorted(items, key=lambda it: (it["model"], it["preset"]))
        job = self.jobs.find_one_and_update({"_id": job_id}, {"$inc": {"next_seq": len(items)}},
                                            projection={"next_seq": 1}, return_document=ReturnDocument.AFTER)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        first = job["next_seq"] - len(items)
        now = _now()
        docs = [{"job_id": job_id, "sha256": it["sha256"], "model": it["model"], "preset": it["preset"],
                 "owner": owner, "file_name": it.get("file_name"), "state": OPEN, "seq": first + n,
                 "created_at": now, "updated_at": now, **({"meta": it["meta"]} if it.get("meta") else {})}
                for n, it in enumerate(items)]
        try:
            self.items.insert_many(docs, ordered=False)
            return list(items)
        except BulkWriteError as exc:
            # Items already in the job (a resumed submission) hit the unique key: they are not new.
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            dup = {e["index"] for e in errors}
            return [it for n, it in enumerate(items) if n not in dup]

    @translated
    def unenqueued(self, job_id: str) -> list[dict]:
        """Items recorded but not yet sent, in sequence order: what a resumed submission must still send."""
        job = self.jobs.find_one({"_id": job_id}, {"enqueued_seq": 1})
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return list(self.items.find(
            {"job_id": job_id, "seq": {"$gt": job.get("enqueued_seq", -1)}},
            {"_id": 0, "sha256": 1, "model": 1, "preset": 1, "seq": 1, "state": 1},
        ).sort("seq", 1))

    @translated
    def mark_enqueued(self, job_id: str, through_seq: int) -> None:
        """Every item up to this sequence number has been sent."""
        self.jobs.update_one({"_id": job_id}, {"$max": {"enqueued_seq": through_seq}})

    @translated
    def record_rejections(self, job_id: str, rejected: list[dict]) -> None:
        """Files refused at validation: [{file, reason}], kept on the job (not items: they have no image)."""
        if rejected:
            self.jobs.update_one({"_id": job_id}, {"$addToSet": {"rejected": {"$each": rejected}}})

    @translated
    def set_state(self, job_id: str, state: str) -> None:
        self.jobs.update_one({"_id": job_id}, {"$set": {"state": state, "updated_at": _now()}})

    @translated
    def open_items(self, job_id: str, model: str, preset: str, shas: list[str]) -> list[dict]:
        """The items of this shard still queued (a redelivered shard skips what is finished)."""
        return list(self.items.find(
            {"job_id": job_id, "model": model, "preset": preset, "sha256": {"$in": shas}, "state": OPEN},
            {"_id": 0, "sha256": 1, "file_name": 1},
        ))

    @translated
    def finish_items(self, job_id: str, model: str, preset: str, outcomes: list[dict]) -> None:
        """Move items out of 'queued': outcomes are {sha256, state, caption?, error?, ...}. Only once per item."""
        if not outcomes:
            return
        now = _now()
        ops = []
        for out in outcomes:
            fields = {k: v for k, v in out.items() if k != "sha256"}
            ops.append(UpdateOne(
                {"job_id": job_id, "sha256": out["sha256"], "model": model, "preset": preset, "state": OPEN},
                {"$set": {**fields, "updated_at": now}},
            ))
        self.items.bulk_write(ops, ordered=False)

    @translated
    def cancel(self, job_id: str) -> int:
        """Cancel what is still queued; finished items keep their results. Returns items cancelled."""
        n = self.items.update_many({"job_id": job_id, "state": OPEN},
                                   {"$set": {"state": "cancelled", "updated_at": _now()}}).modified_count
        self.jobs.update_one({"_id": job_id}, {"$set": {"state": "cancelled", "updated_at": _now()}})
        self.refresh_counts(job_id)
        return n

    @translated
    def counts(self, job_id: str) -> dict[str, int]:
        rows = self.items.aggregate([{"$match": {"job_id": job_id}}, {"$group": {"_id": "$state", "n": {"$sum": 1}}}])
        counts = {s: 0 for s in ITEM_STATES}
        for row in rows:
            counts[row["_id"]] = row["n"]
        counts["total"] = sum(counts[s] for s in ITEM_STATES)
        return counts

    @translated
    def refresh_counts(self, job_id: str) -> dict:
        """Recompute counts from items (exact under redelivery) and close the job when nothing is queued."""
        counts = self.counts(job_id)
        now = _now()
        update: dict = {"counts": counts, "updated_at": now}
        job = self.jobs.find_one({"_id": job_id}, {"state": 1})
        if job and job.get("state") in ("queued", "running") and counts[OPEN] == 0:
            update |= {"state": "done", "finished_at": now}
        elif job and job.get("state") == "queued" and counts["done"] + counts["failed"] > 0:
            update["state"] = "running"
        return self.jobs.find_one_and_update({"_id": job_id}, {"$set": update}, return_document=ReturnDocument.AFTER)

    @translated
    def items_of(self, job_id: str, skip: int = 0, limit: int = 0) -> list[dict]:
        cur = self.items.find({"job_id": job_id}, {"_id": 0}).sort([("sha256", 1), ("model", 1)]).skip(skip)
        return list(cur.limit(limit) if limit else cur)

    @translated
    def list(self, owner: str | None = None, limit: int = 50) -> list[dict]:
        query = {"owner": owner} if owner else {}
        return list(self.jobs.find(query).sort("created_at", -1).limit(limit))
