"""enqueue: send a job's recorded items to their model's tier queue as shard messages (producer and healer)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import redis

from capq.names import CAPTION_TASK, ITEM_QUEUED, SENT_SEQ_KEY, caption_queue
from capq.shard import ShardMessage
from capq.tracing import celery_headers
from capq.transport import redis_epoch

if TYPE_CHECKING:  # the core names storage's types only: storage sits above it
    from storage.jobs import JobStore


def _shards(pending: list[dict], shard_size: int):
    """Cut items (in sequence order) into runs of one model x preset, at most shard_size long."""
    shard: list[dict] = []
    for item in pending:
        if shard and (
            len(shard) == shard_size or (item["model"], item["preset"]) != (shard[0]["model"], shard[0]["preset"])
        ):
            yield shard
            shard = []
        shard.append(item)
    if shard:
        yield shard


PUBLISH_ITEMS = 1000  # items per Redis transaction (and per cursor update in MongoDB)
SENT_TTL_S = 30 * 86400  # a sent mark outlives any crash window; the MongoDB cursor is the lasting record


class _Capture:
    """kombu's publish-batch hooks (kombu 5.7 `Producer.batch`): a publication's final Redis commands are collected
    here instead of run, so they can run in one transaction with the job's sent mark."""

    def __init__(self):
        self.commands: list[tuple[str, tuple]] = []

    def publish(self, channel, message, **kwargs):
        return channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add(self, name: str, *args) -> None:
        self.commands.append((name, args))


def _shard_commands(app, job_id: str, tier: str, shards: list[list[dict]]) -> tuple[list, int]:
    """The Redis commands that would queue these shards (their open items), built by Celery and kombu as a plain
    send_task builds them; -> (commands, images)."""
    capture, sent = _Capture(), 0
    with app.producer_or_acquire() as producer:
        producer._batch_local.current = capture
        try:
            for shard in shards:
                shas = [it["sha256"] for it in shard if it["state"] == ITEM_QUEUED]  # a cancelled item stays unsent
                if shas:
                    message = ShardMessage(job_id, shard[0]["model"], shard[0]["preset"], shas, time.time())
                    app.send_task(
                        CAPTION_TASK,
                        args=message.to_args(),
                        queue=caption_queue(shard[0]["model"], tier),
                        headers=celery_headers(),
                        producer=producer,
                    )
                    sent += len(shas)
        finally:
            del producer._batch_local.current
    return capture.commands, sent


def _publish_once(client: redis.Redis, mark: str, first_seq: int, last_seq: int, commands: list) -> bool:
    """Run the queueing commands and move the job's sent mark to last_seq in one MULTI/EXEC, unless the mark
    already covers first_seq (an earlier, killed run of this submission published them). -> published."""

    def run(pipe) -> bool:
        if int(pipe.get(mark) or -1) >= first_seq:
            return False
        pipe.multi()
        for name, args in commands:
            getattr(pipe, name)(*args)
        pipe.set(mark, last_seq, ex=SENT_TTL_S)
        return True

    return client.transaction(run, mark, value_from_callable=True)


def _batches(pending, size: int):
    """Whole shards, grouped until a group holds `size` items."""
    group: list[list[dict]] = []
    for shard in pending:
        group.append(shard)
        if sum(map(len, group)) >= size:
            yield group
            group = []
    if group:
        yield group


def forget_sent(app, job_id: str) -> None:
    """A new job starts with no sent mark: one left by an erased job of the same id must not hide its items."""
    redis.Redis.from_url(app.conf.broker_url).delete(f"{SENT_SEQ_KEY}{job_id}")


def enqueue_pending(app, jobs: JobStore, job_id: str, tier: str, shard_size: int) -> int:
    """Send every recorded-but-unsent item of the job exactly once; returns images sent. Safe after a kill -9.

    Shards go out in sequence order, PUBLISH_ITEMS at a time. Each group's messages are pushed in one Redis
    transaction that also sets the job's sent mark (SENT_SEQ_KEY) to the group's last sequence number, so in
    Redis "queued" and "marked" are one fact. The MongoDB cursor (enqueued_seq) follows. A kill between the
    two leaves the mark ahead of the cursor: the next run moves the cursor up to the mark first and never
    pushes those shards again. A Redis that lost its data lost the mark with the messages, so the items after
    the cursor are sent again, as they must be (items before it are the healer's, issue 11).
    """
    client = redis.Redis.from_url(app.conf.broker_url)
    # Stamped before sending: should this Redis lose its queues, the healer sees the job sent under an old epoch.
    jobs.stamp_epoch(job_id, redis_epoch(client))
    mark = f"{SENT_SEQ_KEY}{job_id}"
    if (marked := client.get(mark)) is not None:
        jobs.mark_enqueued(job_id, int(marked))
    sent = 0
    for group in _batches(_shards(jobs.unenqueued(job_id), shard_size), PUBLISH_ITEMS):
        commands, images = _shard_commands(app, job_id, tier, group)
        first, last = group[0][0]["seq"], group[-1][-1]["seq"]
        if _publish_once(client, mark, first, last, commands):
            sent += images
            jobs.mark_enqueued(job_id, last)
        else:  # an earlier run pushed this group: the cursor catches up with the mark
            jobs.mark_enqueued(job_id, int(client.get(mark) or last))
    return sent


def resend_open(app, jobs: JobStore, job: dict, shard_size: int) -> int:
    """Issue 11: send again every open item the job already sent (a lost Redis lost them); returns images sent.

    Walks the job page by page (no query or message grows with the job); the items the submission has not
    sent yet stay its own to send. A shard still in a queue is sent twice: the worker skips finished items.
    """
    sent = 0
    for page in jobs.item_pages(job["_id"], through_seq=job.get("enqueued_seq", -1)):
        for shard in _shards([it for it in page if it["state"] == ITEM_QUEUED], shard_size):
            message = ShardMessage(
                job["_id"], shard[0]["model"], shard[0]["preset"], [it["sha256"] for it in shard], time.time()
            )
            app.send_task(CAPTION_TASK, args=message.to_args(), queue=caption_queue(shard[0]["model"], job["tier"]))
            sent += len(shard)
    return sent
