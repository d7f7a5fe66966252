"""owners: every owner's records, and erasing one owner (or old images) in idempotent steps, with an audit trail."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import redis
from pymongo import UpdateOne

from capq.names import DLQ_KEY, KEY_STATS_KEY, QUOTA_KEY, TRANSLATE_CACHE_KEY
from capq.settings import Settings
from storage.blobs import ImageStore, image_store, object_key
from storage.db import insert_new, mongo, translated
from storage.errors import ServiceUnreachable
from storage.translations import text_sha

log = logging.getLogger("capq.retention")

UNFINISHED = ("submitting", "queued", "running")
GC_PAGE = 500
Step = Callable[[str, int], None]


class RedisUnreachable(ServiceUnreachable):
    service = "Redis"


def _now() -> datetime:
    return datetime.now(UTC)


def _pages(values: list, size: int = GC_PAGE) -> Iterable[list]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


class Owners:
    """Owners as the stores know them (from keys and jobs); erasure of one owner; removal of unreferenced images.

    Erasure runs in an order that is safe to interrupt and to run again: each step removes by owner (or by
    sha256 from the image_gc list, which outlives the owner's rows), so a rerun finds what is left and removes
    it. Late writes of a worker that held a shard of a removed job are undone by `discard_late_writes`.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.mongo = mongo(settings)
        self.db = self.mongo.db
        self.blobs = image_store(settings)

    @translated
    def list(self) -> list[dict]:
        """[{owner, keys, jobs, last_job_at}] of every owner with a key or a job."""
        out: dict[str, dict] = {}

        def entry(owner: str) -> dict:
            return out.setdefault(owner, {"owner": owner, "keys": 0, "jobs": 0, "last_job_at": None})

        for row in self.db["api_keys"].aggregate([{"$group": {"_id": "$owner", "n": {"$sum": 1}}}]):
            entry(row["_id"])["keys"] = row["n"]
        for row in self.db["jobs"].aggregate(
            [{"$group": {"_id": "$owner", "n": {"$sum": 1}, "last": {"$max": "$created_at"}}}]
        ):
            entry(row["_id"]).update(jobs=row["n"], last_job_at=row["last"])
        return sorted(out.values(), key=lambda o: o["owner"])

    @translated
    def exists(self, owner: str) -> bool:
        """Whether anything of `owner` is left to erase (or images of an interrupted erasure to collect)."""
        return (
            any(self.db[c].find_one({"owner": owner}, {"_id": 1}) for c in ("api_keys", "jobs", "job_items"))
            or self.db["image_gc"].find_one({}, {"_id": 1}) is not None
        )

    @translated
    def erase(self, owner: str, by: str, keep_key_prefix: str | None = None, on_step: Step = lambda s, n: None) -> dict:
        """Remove everything of `owner`; images (bytes, records, captions) only where no other owner holds them.

        :param by: who asked (an owner name, 'admin:NAME' or 'operator:USER'), kept in the audit record.
        :param keep_key_prefix: self-service erasure keeps the calling key, so the caller can still read the answer.
        -> counts of what was removed. The audit record keeps who, when and these counts, never content.
        """
        audit = (
            self.db["audit"]
            .insert_one(
                {
                    "action": "owner.delete",
                    "owner": owner,
                    "by": by,
                    "state": "running",
                    "started_at": _now(),
                    "keep_key_prefix": keep_key_prefix,
                }
            )
            .inserted_id
        )
        counts: dict[str, int] = {}

        def step(name: str, n: int) -> None:
            counts[name] = counts.get(name, 0) + n
            on_step(name, n)

        # 1. No new work: keys go first (all, or all but the caller's), then unfinished jobs are cancelled, so a
        # worker picking up one of their shards skips it.
        keys = {"owner": owner} | ({"prefix": {"$ne": keep_key_prefix}} if keep_key_prefix else {})
        prefixes = self.db["api_keys"].distinct("prefix", keys)
        step("keys", self.db["api_keys"].delete_many(keys).deleted_count)
        step(
            "cancelled_jobs",
            self.db["jobs"]
            .update_many(
                {"owner": owner, "state": {"$in": list(UNFINISHED)}},
                {"$set": {"state": "cancelled", "updated_at": _now()}},
            )
            .modified_count,
        )
        # 2. Remember the owner's images before their items go: the list outlives an interruption.
        shas = self.db["job_items"].distinct("sha256", {"owner": owner})
        for page in _pages(shas):
            insert_new(self.db["image_gc"], [{"sha256": s, "queued_at": _now()} for s in page])
        step("images_considered", len(shas))
        job_ids = self.db["jobs"].distinct("_id", {"owner": owner})
        # 3. Shared captions keep their text but lose the link to this owner's jobs.
        for page in _pages(job_ids):
            self.db["captions"].update_many({"job_id": {"$in": page}}, {"$unset": {"job_id": "", "worker_id": ""}})
        self._forget_in_redis(owner, job_ids, prefixes)
        # 4. Jobs before their results: a worker's late result is then either removed here or finds its job
        # gone afterwards (discard_late_writes).
        for coll, name in (
            ("jobs", "jobs"),
            ("job_results", "results"),
            ("job_items", "items"),
            ("usage", "usage_rows"),
        ):
            step(name, self.db[coll].delete_many({"owner": owner}).deleted_count)
        step("staged_objects", delete_prefix(self.blobs, f"owners/{owner}/"))
        # 5. Images no other owner references: records, then captions, then bytes.
        removed, kept = self.collect_images()
        step("images_deleted", removed)
        step("images_kept_shared", kept)
        self.db["audit"].update_one(
            {"_id": audit}, {"$set": {"state": "done", "finished_at": _now(), "counts": counts}}
        )
        return counts

    def _redis(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.settings.redis_url,
            socket_connect_timeout=self.settings.connect_timeout_s,
            socket_timeout=self.settings.connect_timeout_s,
        )

    def _forget_in_redis(self, owner: str, job_ids: list[str], prefixes: list[str]) -> None:
        """The owner's dead letters, daily quota counters and its deleted keys' use counters."""
        client = self._redis()
        wanted = set(job_ids)
        try:
            for entry_id, raw in client.hgetall(DLQ_KEY).items():
                if (json.loads(raw).get("args") or [None])[0] in wanted:
                    client.hdel(DLQ_KEY, entry_id)
            # Owner names and key prefixes hold no glob characters (producer.choices), so each matches only itself.
            for pattern in [f"{QUOTA_KEY}{owner}:*"] + [f"{KEY_STATS_KEY}{p}:*" for p in prefixes]:
                names = list(client.scan_iter(match=pattern, count=1000))
                if names:
                    client.delete(*names)
        except redis.RedisError as exc:  # the erasure stops here; run again, it resumes
            raise RedisUnreachable(self.settings.redis_url, str(exc)) from exc

    @translated
    def collect_images(self) -> tuple[int, int]:
        """Go through image_gc: delete each image no job item references, with the translations of caption texts
        no other caption or result uses; for one still referenced, keep it and keep only the file names its
        remaining items use. -> (images deleted, images kept)."""
        removed = kept = 0
        while True:
            page = [d["sha256"] for d in self.db["image_gc"].find({}, {"sha256": 1}).limit(GC_PAGE)]
            if not page:
                return removed, kept
            held: dict[str, set] = {}
            for it in self.db["job_items"].find({"sha256": {"$in": page}}, {"_id": 0, "sha256": 1, "file_name": 1}):
                held.setdefault(it["sha256"], set()).update([it["file_name"]] if it.get("file_name") else [])
            for sha, names in held.items():
                self.db["images"].update_one({"sha256": sha}, {"$set": {"file_names": sorted(names)}})
            gone = [s for s in page if s not in held]
            self._note_caption_texts(gone)
            removed += self.purge_images(gone)
            kept += len(held)
            self._forget_translations(page)
            self.db["image_gc"].delete_many({"sha256": {"$in": page}})

    def _note_caption_texts(self, shas: list[str]) -> None:
        """Keep each image's caption texts on its image_gc entry before the captions go: a rerun after an
        interruption then still knows which translations to check. An entry noted once is not overwritten."""
        texts: dict[str, set] = {s: set() for s in shas}
        for c in self.db["captions"].find({"sha256": {"$in": shas}}, {"_id": 0, "sha256": 1, "caption": 1}):
            texts[c["sha256"]].update([c["caption"]] if c.get("caption") else [])
        if texts:
            self.db["image_gc"].bulk_write(
                [
                    UpdateOne(
                        {"sha256": s, "caption_texts": {"$exists": False}}, {"$set": {"caption_texts": sorted(t)}}
                    )
                    for s, t in texts.items()
                ],
                ordered=False,
            )

    def _forget_translations(self, shas: list[str]) -> None:
        """Remove the translation memory, history and cache of the noted caption texts of these image_gc entries
        that no remaining caption (of any image) or job result still has; cache first, the memory last, so a rerun
        after an interruption finds what is left."""
        noted = {
            t
            for d in self.db["image_gc"].find({"sha256": {"$in": shas}}, {"_id": 0, "caption_texts": 1})
            for t in d.get("caption_texts", [])
        }
        if not noted:
            return
        texts = sorted(noted)
        used = set(self.db["captions"].distinct("caption", {"caption": {"$in": texts}}))
        used |= set(self.db["job_results"].distinct("caption", {"caption": {"$in": texts}}))
        forget = {text_sha(t) for t in texts if t not in used}
        if not forget:
            return
        client = self._redis()
        try:
            # Any target language may be cached (texts already in the target are cached but not remembered),
            # so the cache is matched by its text sha256 suffix.
            names = [
                k
                for k in client.scan_iter(match=f"{TRANSLATE_CACHE_KEY}*", count=1000)
                if k.decode().rsplit(":", 1)[-1] in forget
            ]
            if names:
                client.delete(*names)
        except redis.RedisError as exc:  # the erasure stops here; run again, it resumes
            raise RedisUnreachable(self.settings.redis_url, str(exc)) from exc
        for page in _pages(sorted(forget)):
            self.db["translation_history"].delete_many({"text_sha256": {"$in": page}})
            self.db["translations"].delete_many({"text_sha256": {"$in": page}})

    @translated
    def purge_images(self, shas: list[str]) -> int:
        """Delete images outright: record first (a worker's late caption then sees no image and removes itself),
        then captions, then the bytes. -> how many."""
        if not shas:
            return 0
        self.db["images"].delete_many({"sha256": {"$in": shas}})
        self.db["captions"].delete_many({"sha256": {"$in": shas}})
        delete_keys(self.blobs, [object_key(s) for s in shas])
        return len(shas)

    @translated
    def expire(self, cutoff: datetime, by: str = "retention") -> dict:
        """Retention: delete images first seen before `cutoff`, not submitted since, that no unfinished job
        references, with the job items and results that name them, their captions and their bytes (the erasure's
        rules and steps).
        Images in a queued or running job wait for a later run. -> counts, also kept in an audit record."""
        audit = (
            self.db["audit"]
            .insert_one(
                {
                    "action": "retention",
                    "owner": None,
                    "by": by,
                    "state": "running",
                    "started_at": _now(),
                    "cutoff": cutoff,
                }
            )
            .inserted_id
        )
        counts = {
            "images_expired": 0,
            "images_held_by_unfinished_jobs": 0,
            "images_used_recently": 0,
            "items": 0,
            "results": 0,
        }
        old = [d["sha256"] for d in self.db["images"].find({"first_seen": {"$lt": cutoff}}, {"_id": 0, "sha256": 1})]
        for page in _pages(old):
            refs = list(
                self.db["job_items"].find(
                    {"sha256": {"$in": page}}, {"_id": 0, "job_id": 1, "sha256": 1, "created_at": 1}
                )
            )
            open_jobs = set(
                self.db["jobs"].distinct(
                    "_id", {"_id": {"$in": list({r["job_id"] for r in refs})}, "state": {"$in": list(UNFINISHED)}}
                )
            )
            held = {r["sha256"] for r in refs if r["job_id"] in open_jobs}
            # An old image submitted again lately is as young as its newest use.
            recent = {r["sha256"] for r in refs if r.get("created_at") and r["created_at"] >= cutoff} - held
            expired = [s for s in page if s not in held and s not in recent]
            counts["images_held_by_unfinished_jobs"] += len(held)
            counts["images_used_recently"] += len(recent)
            if not expired:
                continue
            # Queued for collection first: an interruption after this leaves them to the next run.
            insert_new(self.db["image_gc"], [{"sha256": s, "queued_at": _now()} for s in expired])
            counts["results"] += self.db["job_results"].delete_many({"sha256": {"$in": expired}}).deleted_count
            counts["items"] += self.db["job_items"].delete_many({"sha256": {"$in": expired}}).deleted_count
        counts["images_expired"], _ = self.collect_images()
        self.db["audit"].update_one(
            {"_id": audit}, {"$set": {"state": "done", "finished_at": _now(), "counts": counts}}
        )
        return counts

    @translated
    def audit(self, owner: str | None = None, limit: int = 50) -> list[dict]:
        query = {"owner": owner} if owner else {}
        return list(self.db["audit"].find(query, {"_id": 0}).sort("started_at", -1).limit(limit))


def discard_late_writes(db, job_id: str, owner: str, shas: list[str]) -> bool:
    """Called by a worker after it wrote a shard's results: if the job was removed meanwhile, undo what it wrote
    (results, usage of an erased owner, its link on shared captions, captions of images that are gone).
    -> True when the job was gone."""
    if db["jobs"].find_one({"_id": job_id}, {"_id": 1}) is not None:
        return False
    db["job_results"].delete_many({"job_id": job_id})
    if db["audit"].find_one({"action": "owner.delete", "owner": owner}, {"_id": 1}):
        db["usage"].delete_many({"owner": owner})
    db["captions"].update_many({"job_id": job_id}, {"$unset": {"job_id": "", "worker_id": ""}})
    known = {d["sha256"] for d in db["images"].find({"sha256": {"$in": shas}}, {"_id": 0, "sha256": 1})}
    gone = [s for s in shas if s not in known]
    if gone:
        db["captions"].delete_many({"sha256": {"$in": gone}})
    return True


def delete_keys(store: ImageStore, keys: list[str]) -> int:
    """Delete objects by key, 1,000 per request (S3's cap); a key already gone is no error. -> keys asked."""

    def go():
        for page in _pages(keys, 1000):
            store.client.delete_objects(
                Bucket=store.bucket, Delete={"Objects": [{"Key": k} for k in page], "Quiet": True}
            )
        return len(keys)

    return store._call(go, "delete") if keys else 0


def delete_prefix(store: ImageStore, prefix: str) -> int:
    """Delete every object under `prefix`. -> how many there were."""

    def listed() -> list[str]:
        keys = []
        for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    return delete_keys(store, store._call(listed, prefix))


def run_retention(settings: Settings, now: datetime | None = None) -> dict:
    """Delete what is older than the retention (Owners.expire); nothing when retention is off. The retention task
    (workers.retention) and `capq owners retention run` both call it."""
    if not settings.retention_days:
        return {"retention": "off"}
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.retention_days)
    counts = Owners(settings).expire(cutoff)
    log.info("retention before %s: %s", cutoff.isoformat(), counts)
    return counts
