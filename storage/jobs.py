"""jobs: job records, their items (image x model x preset) and the items' results, the truth behind every counter."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from capq.names import ITEM_QUEUED
from capq.settings import Settings
from storage.db import insert_new, mongo, translated
from storage.errors import AlreadyFinished, NotFound

ITEM_STATES = ("queued", "done", "failed", "cancelled")
OPEN = ITEM_QUEUED
FINISHED = ITEM_STATES[1:]
ITEM_PAGE = 1000  # items per query when a whole job is walked


def _now() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return uuid.uuid4().hex


def _by_run(items: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Items grouped by (model, preset), the unit every item query is keyed on."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for it in items:
        groups.setdefault((it["model"], it["preset"]), []).append(it)
    return groups


class JobStore:
    """jobs, job_items and job_results. An item (image x model x preset of a job) is written once when submitted;
    its one result (done, failed or cancelled) is written once when it finishes. Both are inserts against a
    unique key, so a redelivery or a resumed submission can never count or caption an item twice, and an item
    without a result is queued. Exact counts are derived from the two; running tallies keep them cheap."""

    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.jobs = self.mongo["jobs"]
        self.items = self.mongo["job_items"]
        self.results = self.mongo["job_results"]

    @translated
    def create(
        self,
        owner: str,
        tier: str,
        models: list[str],
        preset: str,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        meta: dict | None = None,
    ) -> tuple[dict, bool]:
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
            "_id": job_id or new_job_id(),
            "owner": owner,
            "tier": tier,
            "models": list(models),
            "preset": preset,
            "state": "submitting",
            "counts": {s: 0 for s in ITEM_STATES} | {"total": 0},
            "rejected": [],
            "total": 0,
            "finished": 0,  # running tallies of items and of results (see settle)
            "created_at": now,
            "updated_at": now,
            "finished_at": None,
            **(meta or {}),
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
    def get(self, job_id: str, fields: tuple[str, ...] | None = None) -> dict:
        """The job, or only `fields` of it (a job's list of rejected files can be long)."""
        job = self.jobs.find_one({"_id": job_id}, dict.fromkeys(fields, 1) if fields else None)
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
        job = self.jobs.find_one_and_update(
            {"_id": job_id},
            {"$inc": {"next_seq": len(items)}},
            projection={"next_seq": 1},
            return_document=ReturnDocument.AFTER,
        )
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        first = job["next_seq"] - len(items)
        now = _now()
        docs = [
            {
                "job_id": job_id,
                "sha256": it["sha256"],
                "model": it["model"],
                "preset": it["preset"],
                "owner": owner,
                "file_name": it.get("file_name"),
                "seq": first + n,
                "created_at": now,
                **({"meta": it["meta"]} if it.get("meta") else {}),
            }
            for n, it in enumerate(items)
        ]
        # Items already in the job (a resumed submission) hit the unique key: they are not new.
        dup = insert_new(self.items, docs)
        new = [it for n, it in enumerate(items) if n not in dup]
        if new:
            self.jobs.update_one(
                {"_id": job_id}, {"$inc": {"total": len(new), "counts.total": len(new), f"counts.{OPEN}": len(new)}}
            )
        return new

    def unenqueued(self, job_id: str) -> Iterator[dict]:
        """Items recorded but not yet sent, in sequence order: what a resumed submission must still send.
        Each carries its state: one already finished (cancelled) is not sent again. Read page by page, so
        no query grows with the job."""
        job = self.mongo.call(lambda: self.jobs.find_one({"_id": job_id}, {"enqueued_seq": 1}))
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        # Nothing finished yet (the usual first submission): every item is open, no need to look.
        none_finished = self.mongo.call(lambda: self.results.find_one({"job_id": job_id}, {"_id": 1})) is None
        for page in self.item_pages(job_id, after_seq=job.get("enqueued_seq", -1), all_open=none_finished):
            yield from page

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
        # A cancel wins: a submission finishing after it must not bring the job back to life.
        self.jobs.update_one(
            {"_id": job_id, "state": {"$ne": "cancelled"}}, {"$set": {"state": state, "updated_at": _now()}}
        )

    def _finished(self, job_id: str, model: str, preset: str, shas: list[str]) -> dict[str, str]:
        """{sha256: state} of those of these items that have a result."""
        cur = self.results.find(
            {"job_id": job_id, "model": model, "preset": preset, "sha256": {"$in": list(shas)}},
            {"_id": 0, "sha256": 1, "state": 1},
        )
        return {r["sha256"]: r["state"] for r in cur}

    @translated
    def open_items(self, job_id: str, model: str, preset: str, shas: list[str]) -> list[dict]:
        """The items of this shard with no result yet (a redelivered shard skips what is finished)."""
        finished = self._finished(job_id, model, preset, shas)
        items = self.items.find(
            {"job_id": job_id, "model": model, "preset": preset, "sha256": {"$in": list(shas)}},
            {"_id": 0, "sha256": 1, "file_name": 1, "meta": 1},
        )
        return [it for it in items if it["sha256"] not in finished]

    @translated
    def finish_items(
        self, job_id: str, owner: str, model: str, preset: str, outcomes: list[dict], on_new=None
    ) -> dict[str, int]:
        """Record each item's one result: outcomes are {sha256, state, file_name?, meta?, caption?, error?, ...}.

        An insert against the unique (job, model, preset, image) key: an item already finished (a redelivery,
        a cancel racing a worker) keeps its first result. -> results newly recorded, per state.
        """
        if not outcomes:
            return {}
        now = _now()
        docs = [
            {"job_id": job_id, "owner": owner, "model": model, "preset": preset, **out, "updated_at": now}
            for out in outcomes
        ]
        skipped = insert_new(self.results, docs)
        if on_new is not None:  # the results this call recorded (usage counts each once)
            on_new([d for n, d in enumerate(docs) if n not in skipped])
        return dict(Counter(out["state"] for n, out in enumerate(outcomes) if n not in skipped))

    @translated
    def cancel(self, job_id: str) -> int:
        """Cancel what is still queued; finished items keep their results. Returns items cancelled.
        Raises AlreadyFinished for a job that is done (its results stand)."""
        job = self.jobs.find_one_and_update(
            {"_id": job_id, "state": {"$ne": "done"}},
            {"$set": {"state": "cancelled", "updated_at": _now()}},
            projection={"owner": 1},
        )
        if job is None:
            self.get(job_id, ("state",))  # NotFound when there is no such job
            raise AlreadyFinished(
                f"job {job_id!r} is already done: every item has its result, there is nothing left to cancel"
            )
        cancelled = 0
        # Page through the job so a large one never sits in memory; a worker finishing an item meanwhile wins.
        for page in self.item_pages(job_id):
            for (model, preset), group in _by_run(page).items():
                outcomes = [
                    {"sha256": it["sha256"], "file_name": it.get("file_name"), "state": "cancelled"}
                    for it in group
                    if it["state"] == OPEN
                ]
                cancelled += self.finish_items(job_id, job["owner"], model, preset, outcomes).get("cancelled", 0)
        self.refresh_counts(job_id)
        return cancelled

    @translated
    def counts(self, job_id: str) -> dict[str, int]:
        """Exact counts: every item, less those with a result, is queued."""
        counts = {s: 0 for s in ITEM_STATES}
        for row in self.results.aggregate(
            [{"$match": {"job_id": job_id}}, {"$group": {"_id": "$state", "n": {"$sum": 1}}}]
        ):
            counts[row["_id"]] = row["n"]
        counts["total"] = self.items.count_documents({"job_id": job_id})
        counts[OPEN] = counts["total"] - sum(counts[s] for s in FINISHED)
        return counts

    @translated
    def refresh_counts(self, job_id: str) -> dict:
        """Recompute counts exactly and close the job when nothing is queued. Costs a pass over the job's
        items, so workers call it through settle, not per shard.

        Two recounts can race: a reader's, counted before a worker's last results, and the worker's, which
        closes the job. The update is conditional on the state read before counting, and a recount whose
        job changed state meanwhile counts again, so stale figures never land on a job just closed."""
        for attempt in range(3):
            job = self.jobs.find_one({"_id": job_id}, {"state": 1})
            state = job.get("state") if job else None
            counts = self.counts(job_id)
            now = _now()
            update: dict = {
                "$set": {"counts": counts, "updated_at": now},
                # Re-base the workers' running tallies (see settle) on the exact figures.
                "$max": {"total": counts["total"], "finished": counts["total"] - counts[OPEN]},
            }
            if state in ("queued", "running") and counts[OPEN] == 0:
                update["$set"] |= {"state": "done", "finished_at": now}
            elif state == "queued" and counts["total"] > counts[OPEN]:
                update["$set"]["state"] = "running"
            # (after two changes of state under it, the third try writes unconditionally)
            where = {"_id": job_id, "state": state} if attempt < 2 else {"_id": job_id}
            after = self.jobs.find_one_and_update(where, update, return_document=ReturnDocument.AFTER)
            if after is not None or job is None:
                return after

    @translated
    def settle(self, job_id: str, new: dict[str, int], recount: bool = False) -> dict:
        """After a worker's shard: add its new results to the job's tallies; recount exactly (and close the job)
        only when the tallies say every item may be finished, or when `recount` (a redelivered shard).

        `finished` and `total` are running tallies kept by $inc, so a shard costs one update, not a pass over
        the job. A crash between recording results and this call leaves `finished` short; the redelivered
        shard then passes recount=True, and readers' status calls recount too. (A recount racing a worker's
        $inc can only leave it long, which costs one early recount.) A job is closed only on exact figures.
        """
        finished = sum(new.get(s, 0) for s in FINISHED)
        inc = {"finished": finished, f"counts.{OPEN}": -finished} | {f"counts.{s}": n for s, n in new.items() if n}
        job = self.jobs.find_one_and_update(
            {"_id": job_id},
            {"$inc": inc},
            return_document=ReturnDocument.AFTER,
            projection={"state": 1, "finished": 1, "total": 1, "counts": 1},
        )
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        if recount or job.get("finished", 0) >= job.get("total", 0):
            return self.refresh_counts(job_id)
        if job.get("state") == "queued" and finished:
            if self.jobs.update_one({"_id": job_id, "state": "queued"}, {"$set": {"state": "running"}}).modified_count:
                job["state"] = "running"
        return job

    @translated
    def items_of(self, job_id: str, skip: int = 0, limit: int = 0) -> list[dict]:
        """The job's items in submission order, each with its result's fields (state 'queued' until it has one)."""
        cur = self.items.find({"job_id": job_id}, {"_id": 0}).sort("seq", 1).skip(skip)
        items = list(cur.limit(limit) if limit else cur)
        out = []
        for (model, preset), group in _by_run(items).items():
            results = {
                r["sha256"]: r
                for r in self.results.find(
                    {
                        "job_id": job_id,
                        "model": model,
                        "preset": preset,
                        "sha256": {"$in": [it["sha256"] for it in group]},
                    },
                    {"_id": 0},
                )
            }
            out += [it | results.get(it["sha256"], {"state": OPEN}) for it in group]
        return sorted(out, key=lambda it: it["seq"])

    @translated
    def list(self, owner: str | None = None, limit: int = 50) -> list[dict]:
        query = {"owner": owner} if owner else {}
        return list(self.jobs.find(query).sort("created_at", -1).limit(limit))

    # Issue 11: paged reads for resuming and healing, and the Redis epoch each job was last sent under.

    @translated
    def _item_page(self, job_id: str, after_seq: int, through_seq: int, all_open: bool) -> list[dict]:
        # A closed range of the (job_id, seq) index, sorted here: a sort + limit over an open range made
        # SecantusDB read the whole rest of the job for each page (25 s a page at 300,000 items).
        items = sorted(
            self.items.find(
                {"job_id": job_id, "seq": {"$gt": after_seq, "$lte": through_seq}},
                {"_id": 0, "sha256": 1, "model": 1, "preset": 1, "file_name": 1, "seq": 1},
            ),
            key=lambda it: it["seq"],
        )
        for (model, preset), group in _by_run(items).items():
            finished = {} if all_open else self._finished(job_id, model, preset, [it["sha256"] for it in group])
            for it in group:
                it["state"] = finished.get(it["sha256"], OPEN)
        return items

    def item_pages(
        self,
        job_id: str,
        after_seq: int = -1,
        through_seq: int | None = None,
        page: int = ITEM_PAGE,
        all_open: bool = False,
    ) -> Iterator[list[dict]]:
        """The job's items after `after_seq` (through `through_seq`), in sequence order, `page` at a time, each
        with its state (`all_open`: the caller knows none is finished): every query is a window of `page`
        sequence numbers, so it is bounded whatever the size of the job. (Numbers given to items already in the
        job leave gaps: a page may hold fewer items, or none.)"""
        if through_seq is None:
            job = self.mongo.call(lambda: self.jobs.find_one({"_id": job_id}, {"next_seq": 1}))
            through_seq = (job or {}).get("next_seq", 0) - 1
        while after_seq < through_seq:
            upto = min(after_seq + page, through_seq)
            items = self._item_page(job_id, after_seq, upto, all_open)
            if items:
                yield items
            after_seq = upto

    @translated
    def unsent_under(self, epoch: str) -> list[dict]:
        """Unfinished jobs last sent under another Redis epoch: their queued work may be lost with that Redis."""
        return list(
            self.jobs.find(
                {"state": {"$in": ["submitting", "queued", "running"]}, "redis_epoch": {"$ne": epoch}},
                {"_id": 1, "tier": 1, "enqueued_seq": 1},
            )
        )

    @translated
    def stamp_epoch(self, job_id: str, epoch: str) -> None:
        self.jobs.update_one({"_id": job_id}, {"$set": {"redis_epoch": epoch}})
