"""enqueue: send a job's recorded items to their model's tier queue as shards of image ids."""
from __future__ import annotations

import time
from collections import defaultdict

from capq.names import CAPTION_TASK, caption_queue
from storage.jobs import JobStore



def enqueue_pending(app, jobs: JobStore, job_id: str, tier: str, shard_size: int) -> int:
    """Send every recorded-but-unsent item of the job; returns images sent. Safe to call again after a crash.

    Items are marked sent only after their shard is published, so a crash in between re-sends that shard
    once; the worker skips items already finished, so nothing is captioned or counted twice.
    """
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for item in jobs.unenqueued(job_id):
        groups[(item["model"], item["preset"])].append(item["sha256"])
    sent = 0
    for (model, preset), shas in groups.items():
        for i in range(0, len(shas), shard_size):
            shard = shas[i:i + shard_size]
            app.send_task(CAPTION_TASK, args=[job_id, model, preset, shard, time.time()],
                          queue=caption_queue(model, tier))
            jobs.mark_enqueued(job_id, model, preset, shard)
            sent += len(shard)
    return sent
