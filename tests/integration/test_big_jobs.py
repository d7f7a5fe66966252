"""Big jobs (issue 11): resuming and healing a job walks it in bounded pages; no query or message grows with it.

Every command sent to MongoDB is watched: its largest `$in` and its size stay under one page whatever the size of
the job, here 300,000 items (300 pages), bulk-inserted straight into job_items so that the test stays quick.
"""

from __future__ import annotations

import base64
import json
from collections import Counter

import bson
import pytest
import redis
from pymongo import MongoClient, monitoring

from capq.celery_app import create_app
from capq.enqueue import resend_open
from capq.names import caption_queue
from storage.db import Mongo
from storage.jobs import ITEM_PAGE, JobStore
from tests.conftest import flush_redis
from tests.e2e.conftest import env_settings

N = 300 * ITEM_PAGE  # the size issue 11 names: one $in of every sha256 would pass MongoDB's 16 MiB
FINISHED = 1500
SHARD = 200
INSERT_BULK = 10_000


class Commands(monitoring.CommandListener):
    """The largest $in and the largest command seen."""

    def __init__(self):
        self.max_in = self.max_bytes = 0

    def started(self, event):
        self.max_bytes = max(self.max_bytes, len(bson.encode(event.command)))
        self.max_in = max(self.max_in, _largest_in(event.command))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def _largest_in(doc) -> int:
    if isinstance(doc, dict):
        return max([len(v) if k == "$in" else _largest_in(v) for k, v in doc.items()] or [0])
    if isinstance(doc, list):
        return max([_largest_in(v) for v in doc] or [0])
    return 0


def queued_shards(s) -> list[list[str]]:
    queue = redis.Redis.from_url(s.redis_url).lrange(caption_queue("blip", "free"), 0, -1)
    return [json.loads(base64.b64decode(json.loads(m)["body"]))[0][3] for m in queue]


@pytest.fixture
def big_job(settings):
    """A job of N items bulk-inserted straight into job_items (no images needed), in a database of its own,
    read through a client whose every command is watched."""
    s, _ = env_settings(settings, mongo_db=settings.mongo_db + "_big")
    Mongo(s).ensure_indexes()
    jobs = JobStore(s)
    try:
        job, _ = jobs.create("big", "free", ["blip"], "default")
        # Only the index the walks read by: SecantusDB (a Python server) keeps each index per insert, and the
        # others (owner, image) only slow the 300,000 inserts down.
        jobs.items.drop_indexes()
        jobs.items.create_index([("job_id", 1), ("seq", 1)])
        for start in range(0, N, INSERT_BULK):
            jobs.items.insert_many(
                [
                    {"job_id": job["_id"], "sha256": f"{i:064x}", "model": "blip", "preset": "default", "seq": i}
                    for i in range(start, min(start + INSERT_BULK, N))
                ],
                ordered=False,
            )
        jobs.jobs.update_one({"_id": job["_id"]}, {"$set": {"next_seq": N}})  # as add_items keeps it
        jobs.finish_items(
            job["_id"],
            "big",
            "blip",
            "default",
            [{"sha256": f"{i:064x}", "state": "done", "caption": "c"} for i in range(0, N, N // FINISHED)],
        )
        listener = Commands()
        db = MongoClient(s.mongo_url, event_listeners=[listener])[s.mongo_db]
        jobs.jobs, jobs.items, jobs.results = db["jobs"], db["job_items"], db["job_results"]
        yield s, jobs, job["_id"], listener
    finally:
        flush_redis(s)
        # With no socket timeout: SecantusDB takes longer than the stores' 30 s to drop 300,000 items.
        with MongoClient(s.mongo_url) as client:
            client.drop_database(s.mongo_db)


def test_resume_and_heal_walk_a_big_job_in_bounded_pages(big_job):
    s, jobs, job_id, commands = big_job
    finished = set(range(0, N, N // FINISHED))
    # Resume: the walk finds every item with its state
    items = list(jobs.unenqueued(job_id))
    assert len(items) == N and [it["seq"] for it in items] == list(range(N))
    assert Counter(it["state"] for it in items) == {"queued": N - FINISHED, "done": FINISHED}

    # Heal: a job whose every item was sent, under a Redis that lost them, is sent again in bounded shards
    jobs.mark_enqueued(job_id, N - 1)
    flush_redis(s)
    sent = resend_open(create_app(s), jobs, jobs.get(job_id, ("tier", "enqueued_seq")), SHARD)
    assert sent == N - FINISHED
    shards = queued_shards(s)
    assert max(len(sh) for sh in shards) <= SHARD, "no message grows with the job"
    shas = [sha for sh in shards for sha in sh]
    assert len(shas) == len(set(shas)) == N - FINISHED, "every open item sent once"
    assert not {int(sha, 16) for sha in shas} & finished, "finished items are not sent again"

    # and no command to MongoDB grew with the job: at most one page of ids, well under its 16 MiB limit
    assert commands.max_in == ITEM_PAGE
    assert commands.max_bytes < 100 * ITEM_PAGE
