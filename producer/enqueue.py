"""enqueue: send a job's recorded items to their model's tier queue as shards of image ids."""
from __future__ import annotations

import time

from capq.names import CAPTION_TASK, caption_queue
from capq.tracing import celery_headers
from storage.jobs import OPEN, JobStore


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
    sent = 0
    for shard in _shards(jobs.unenqueued(job_id), shard_size):
        shas = [it["sha256"] for it in shard if it["state"] == OPEN]  # a cancelled item stays unsent
        if shas:
            app.send_task(CAPTION_TASK, args=[job_id, shard[0]["model"], shard[0]["preset"], shas, time.time()],
                          queue=caption_queue(shard[0]["model"], tier), headers=celery_headers())
            sent += len(shas)
        jobs.mark_enqueued(job_id, shard[-1]["seq"])
    return sent
