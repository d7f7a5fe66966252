"""healing: live workers bring back a dead worker's shards and a lost Redis's queues; no extra process.

As in dramatiq's Redis broker and Sidekiq Pro's reliable fetch: every worker heartbeats and records which
unacked deliveries it holds; one live worker, elected through a Redis lock, puts back on their queues the
deliveries of workers whose heartbeat is gone (kombu's own restore waits out the visibility timeout, an hour).
MongoDB holds what is pending, so when Redis comes back empty (a new epoch) the elected worker sends the open
items of every unfinished job again. Write-once results make a second delivery harmless.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import redis
from celery import signals
from kombu.exceptions import OperationalError
from kombu.transport.redis import Channel

from capq.enqueue import resend_open
from capq.names import DEATHS_KEY, HEALER_LOCK, HELD_KEY, INFLIGHT_KEY, OUTAGES_KEY, REDRIVES_KEY, heartbeat_key
from capq.settings import Settings
from capq.shard import shard_of
from capq.transport import redis_epoch
from storage.blobs import image_store
from storage.db import mongo
from storage.errors import StorageError
from storage.jobs import JobStore
from workers.deadletters import DeadLetters

log = logging.getLogger("capq.worker")
DEATHS_TTL_S = 7 * 86400  # deaths and re-drive counts are forgotten a week after the last one
PAGE = 500


def _client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.connect_timeout_s,
        socket_timeout=max(settings.connect_timeout_s, 5),
        decode_responses=True,
    )


class Holdings:
    """The deliveries this process holds, mirrored in Redis (HELD_KEY: tag -> worker id) for the healer."""

    def __init__(self, settings: Settings, wid: str):
        self.redis, self.wid = _client(settings), wid
        self.tags: dict[str, str] = {}  # task id -> kombu delivery tag

    def connect(self) -> None:
        signals.task_received.connect(self.received, weak=False)
        signals.task_postrun.connect(self.finished, weak=False)

    def received(self, sender=None, request=None, **_) -> None:
        tag = request.message.delivery_tag
        self.tags[request.id] = tag
        try:
            self.redis.hset(HELD_KEY, tag, self.wid)
        except redis.RedisError as exc:  # the healer then takes it for unheld: at worst a harmless redelivery
            log.warning("could not record delivery %s as held: %s", tag, exc)

    def finished(self, sender=None, task_id=None, **_) -> None:
        tag = self.tags.pop(task_id, None)
        if tag is not None:
            try:
                self.redis.pipeline().hdel(HELD_KEY, tag).delete(INFLIGHT_KEY + tag).execute()
            except redis.RedisError as exc:
                log.warning("could not release delivery %s: %s", tag, exc)

    def batch_started(self, task_id: str, job_id: str, shas: list[str]) -> None:
        """Name the images being captioned now: should this process die, they are the suspects."""
        tag = self.tags.get(task_id)
        if tag is not None:
            try:
                self.redis.set(INFLIGHT_KEY + tag, json.dumps([job_id, shas]))
            except redis.RedisError as exc:  # poison accounting is best effort; the shard goes on
                log.warning("could not name the batch in flight: %s", exc)

    def deaths(self, job_id: str, shas: list[str]) -> dict[str, int]:
        """{sha: times a worker died captioning it}, for those of `shas` that killed one."""
        try:
            counts = self.redis.hmget(DEATHS_KEY + job_id, shas) if shas else []
        except redis.RedisError as exc:
            log.warning("could not read the shard's deaths: %s", exc)
            return {}
        return {sha: int(n) for sha, n in zip(shas, counts) if n}


class Healer:
    """Run by every worker; only the one holding HEALER_LOCK acts. See the module docstring."""

    def __init__(self, settings: Settings, app, wid: str):
        self.settings, self.app, self.wid = settings, app, wid
        self.redis = _client(settings)

    def start(self) -> None:
        threading.Thread(target=self._loop, name="healer", daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(self.settings.heal_interval_s)
            try:
                if self.elected():
                    done = self.heal_once()
                    if any(done.values()):
                        log.warning("healed: %s", done)
            except (redis.RedisError, OperationalError, StorageError) as exc:
                log.warning("healing skipped this round: %s", exc)
            except Exception:  # a bug here must not end healing for good
                log.exception("healing failed this round")

    def elected(self) -> bool:
        ttl = self.settings.worker_lost_after_s
        if self.redis.set(HEALER_LOCK, self.wid, nx=True, ex=ttl):
            return True
        if self.redis.get(HEALER_LOCK) == self.wid:
            self.redis.expire(HEALER_LOCK, ttl)
            return True
        return False

    def heal_once(self) -> dict[str, int]:
        done = {}
        # Each step on its own: MongoDB being down must not stop a dead worker's shards coming back.
        for name, step in (
            ("restored", self.restore_dead),
            ("redriven", self.redrive_unreachable),
            ("resent", self.reconcile),
            ("outages_over", self.clear_outages),
        ):
            try:
                done[name] = step()
            except (redis.RedisError, OperationalError, StorageError) as exc:
                log.warning("healing step %s skipped: %s", name, exc)
                done[name] = 0
        return done

    def _live(self, wid: str, cache: dict[str, bool]) -> bool:
        if wid not in cache:
            cache[wid] = bool(self.redis.exists(heartbeat_key(wid)))
        return cache[wid]

    def restore_dead(self) -> int:
        """Put back the unacked deliveries held by no live worker; -> how many."""
        live: dict[str, bool] = {}
        # A delivery is unheld for the moment between kombu recording it and the worker's signal: allow for that.
        ceil = time.time() - self.settings.heal_interval_s
        orphans: list[tuple[str, str | None]] = []
        start = 0
        while True:
            tags = self.redis.zrangebyscore(Channel.unacked_index_key, "-inf", ceil, start=start, num=PAGE)
            if not tags:
                break
            start += len(tags)
            for tag, holder in zip(tags, self.redis.hmget(HELD_KEY, tags)):
                if holder is None or not self._live(holder, live):
                    orphans.append((tag, holder))
        if orphans:
            with self.app.connection_for_write() as conn:
                qos = conn.default_channel.qos
                for tag, holder in orphans:
                    if holder is not None:
                        self._count_death(tag)
                    qos.restore_by_tag(tag)  # back to the head of its queue
                    self.redis.hdel(HELD_KEY, tag)
                    log.warning("restored delivery %s of %s", tag, holder or "no live worker")
        # Entries of dead holders whose delivery is gone (acked, or restored above) are dropped.
        stale = [tag for tag, holder in self.redis.hscan_iter(HELD_KEY) if not self._live(holder, live)]
        if stale:
            self.redis.hdel(HELD_KEY, *stale)
        return len(orphans)

    def _count_death(self, tag: str) -> None:
        raw = self.redis.get(INFLIGHT_KEY + tag)
        if raw:
            job_id, shas = json.loads(raw)
            pipe = self.redis.pipeline()
            for sha in shas:
                pipe.hincrby(DEATHS_KEY + job_id, sha, 1)
            pipe.expire(DEATHS_KEY + job_id, DEATHS_TTL_S).delete(INFLIGHT_KEY + tag).execute()

    def redrive_unreachable(self) -> int:
        """Re-drive the dead letters of an outage once MongoDB and S3 answer again (bounded, with backoff);
        `capq dlq retry` stays for what failed for other reasons. -> shards re-driven."""
        letters = DeadLetters(self.settings)
        now = time.time()
        due = []
        for entry in letters.list():
            shard = shard_of(entry["args"])
            if shard is None:  # not a caption shard: `capq dlq retry` is the operator's to run
                continue
            key = f"{shard.job_id}:{(shard.shas or [''])[0]}"
            if redrive_due(entry, int(self.redis.hget(REDRIVES_KEY, key) or 0), self.settings, now):
                due.append((entry["id"], key))
        if not due or not _answers(self.settings):
            return 0
        for entry_id, key in due:
            self.redis.pipeline().hincrby(REDRIVES_KEY, key, 1).expire(REDRIVES_KEY, DEATHS_TTL_S).execute()
            letters.retry(self.app, [entry_id])
            log.warning("re-drove dead letter %s: the services answer again", entry_id)
        return len(due)

    def clear_outages(self) -> int:
        if self.redis.hlen(OUTAGES_KEY) and _answers(self.settings):
            return self.redis.delete(OUTAGES_KEY)
        return 0

    def reconcile(self) -> int:
        """Send again the open items of unfinished jobs last sent under another Redis epoch; -> images sent."""
        epoch = redis_epoch(self.redis)
        jobs = JobStore(self.settings)
        sent = 0
        for job in jobs.unsent_under(epoch):
            n = resend_open(self.app, jobs, job, self.settings.batch_size * self.settings.shard_batches)
            jobs.stamp_epoch(job["_id"], epoch)
            log.warning("job %s was sent under an older Redis: %d open item(s) sent again", job["_id"], n)
            sent += n
        return sent


HOLDINGS: Holdings | None = None  # this worker process's, set by workers.consume


def note_outage(settings: Settings, exc) -> None:
    """Record since when a service is unreachable (the first worker to see it sets the time)."""
    try:
        _client(settings).hsetnx(OUTAGES_KEY, exc.service, str(time.time()))
    except redis.RedisError:
        pass


def _answers(settings: Settings) -> bool:
    try:
        mongo(settings).ping()
        image_store(settings).ensure_bucket()
    except StorageError:
        return False
    return True


def redrive_due(entry: dict, redrives: int, settings: Settings, now: float) -> bool:
    """A dead letter of an unreachable service is due again after a backoff that doubles per re-drive."""
    if "unreachable" not in entry.get("error", "") or redrives >= settings.redrive_max:
        return False
    return now >= entry["failed_at"] + settings.redrive_backoff_s * 2 ** min(redrives, 4)
