"""enqueue: send a job's recorded items to their model's tier queue as shard messages (producer and healer)."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import redis

from capq.names import CAPTION_TASK, ITEM_QUEUED, caption_queue
from capq.shard import ShardMessage
from capq.tracing import celery_headers
from capq.transport import redis_epoch

if TYPE_CHECKING:  # the core names storage's types only: storage sits above it
    from storage.jobs import JobStore


def _shards(pending: list[dict], shard_size: int):
    """Cut items (in sequence order) into runs of one model x preset, at most shard_size long."""
    shard: list[dict] = []
    for item in pending:
        if shard and (len(shard) == shard_size or (item["model"], item["preset"]) != (shard[0]["model"], shard[0]["preset"])):
            yield shard
            shard = []
        shard.append(item)
    if shard:
        yield shard


def enqueue_pending(app, jobs: JobStore, job_id: str, tier: str, shard_size: int) -> int:
    """Send every recorded-but-unsent item of the job; returns images sent. Safe to call again after a crash.

    Shards go out in sequence order and the job's cursor moves past each one right after it is published,
    so a resumed submission sends exactly what was left. (A crash between a publish and its cursor update
    re-sends that one shard; the worker skips finished items, so nothing is captioned or counted twice.)
    """
    # Stamped before sending: should this Redis lose its queues, the healer sees the job sent under an old epoch.
    jobs.stamp_epoch(job_id, redis_epoch(redis.Redis.from_url(app.conf.broker_url)))
    sent = 0
    for shard in _shards(jobs.unenqueued(job_id), shard_size):
        shas = [it["sha256"] for it in shard if it["state"] == ITEM_QUEUED]  # a cancelled item stays unsent
        if shas:
            message = ShardMessage(job_id, shard[0]["model"], shard[0]["preset"], shas, time.time())
            app.send_task(CAPTION_TASK, args=message.to_args(),
                          queue=caption_queue(shard[0]["model"], tier), headers=celery_headers())
            sent += len(shas)
        jobs.mark_enqueued(job_id, shard[-1]["seq"])
    return sent


def resend_open(app, jobs: JobStore, job: dict, shard_size: int) -> int:
    """Issue 11: send again every open item the job already sent (a lost Redis lost them); returns images sent.

    Walks the job page by page (no query or message grows with the job); the items the submission has not
    sent yet stay its own to send. A shard still in a queue is sent twice: the worker skips finished items.
    """
    sent = 0
    for page in jobs.item_pages(job["_id"], through_seq=job.get("enqueued_seq", -1)):
        for shard in _shards([it for it in page if it["state"] == ITEM_QUEUED], shard_size):
            message = ShardMessage(job["_id"], shard[0]["model"], shard[0]["preset"], [it["sha256"] for it in shard],
                                   time.time())
            app.send_task(CAPTION_TASK, args=message.to_args(),
                          queue=caption_queue(shard[0]["model"], job["tier"]))
            sent += len(shard)
    return sent
