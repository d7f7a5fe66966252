"""queue_metrics: what waits in Redis per model and tier (depth, oldest item, each job's place), as a collector."""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass, field

import redis
from prometheus_client.core import GaugeMetricFamily

from capq.names import DLQ_KEY, EVAL_QUEUE, MODEL_NAMES, TIERS, caption_queue
from capq.settings import Settings
from capq.shard import shard_of
from capq.throughput import live_workers

log = logging.getLogger("capq.exporter")


def _shard(raw: str) -> tuple[str | None, int, float | None]:
    """A kombu Redis message -> (job id, images, enqueued_at) from the caption task's args; (None, 0, None)
    for a message of another shape."""
    try:
        msg = json.loads(raw)
        body = msg["body"]
        if msg.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        shard = shard_of(json.loads(body)[0])
    except (ValueError, KeyError, IndexError, TypeError):
        shard = None
    return (shard.job_id, len(shard.shas), shard.enqueued_at) if shard else (None, 0, None)


@dataclass
class QueueState:
    """One caption queue: shards and images waiting, the oldest shard's enqueue time, and per job the images
    up to and including that job's last shard (the work that must be done before the job is)."""

    name: str
    shards: int = 0
    images: int = 0
    oldest_at: float | None = None
    through_job: dict[str, int] = field(default_factory=dict)


def read_queue(client: redis.Redis, name: str, scan: bool = True) -> QueueState:
    """Read one queue. kombu pushes on the left and workers pop on the right: the right end is the oldest.

    With scan=False only the length and the oldest message are read (cheap, for every scrape); scan=True reads
    every message (for ETAs: the queue is a list of shard messages, each a few hundred bytes).
    """
    state = QueueState(name, shards=client.llen(name))
    if not state.shards:
        return state
    oldest = client.lindex(name, -1)
    if oldest is not None:
        state.oldest_at = _shard(oldest)[2]
    if scan:
        running = 0
        for raw in reversed(client.lrange(name, 0, -1)):  # oldest first
            job_id, n, _ = _shard(raw)
            running += n
            if job_id:
                state.through_job[job_id] = running
        state.images = running
    return state


# kombu's Redis transport keeps each message a worker holds (acks_late: until it is done) in these two keys.
KOMBU_UNACKED, KOMBU_UNACKED_INDEX = "unacked", "unacked_index"


def in_flight(client: redis.Redis) -> list[tuple[str, str | None, int, float]]:
    """Shards workers hold now: (queue, job id, images, taken_at). A dead worker's entry stays until it is restored; its
    taken_at is old, so estimates treat it as finished."""
    out = []
    for tag, raw in client.hgetall(KOMBU_UNACKED).items():
        try:
            message, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        job_id, images, _at = _shard(json.dumps(message))
        taken_at = client.zscore(KOMBU_UNACKED_INDEX, tag)
        if images and taken_at is not None:
            out.append((routing_key, job_id, images, taken_at))
    return out


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.connect_timeout_s,
        socket_timeout=max(settings.connect_timeout_s, 5),
        decode_responses=True,
    )


class QueueCollector:
    """Prometheus collector read at scrape time from Redis (queues, heartbeats, dead letters) and MongoDB (the
    newest evaluation scores). One runs per deployment (`capq exporter`): the values are global, not per process."""

    def __init__(self, settings: Settings, score_reader=None):
        self.settings = settings
        self.client = redis_client(settings)
        self.score_reader = score_reader

    def describe(self):
        return []  # values are read at collect time; an empty describe keeps registration from collecting

    def collect(self):
        up = GaugeMetricFamily("capq_exporter_source_up", "1 when the source answered this scrape", labels=["source"])
        try:
            yield from self._redis_families()
            up.add_metric(["redis"], 1)
        except redis.RedisError as exc:
            log.warning("redis unreadable: %s", exc)
            up.add_metric(["redis"], 0)
        if self.score_reader is not None:
            try:
                yield from self.score_reader()
                up.add_metric(["mongodb"], 1)
            except Exception as exc:  # noqa: BLE001 - a scrape must answer even when MongoDB does not
                log.warning("evaluations unreadable: %s", exc)
                up.add_metric(["mongodb"], 0)
        yield up

    def _redis_families(self):
        now = time.time()
        depth = GaugeMetricFamily("capq_queue_shards", "Shard messages waiting in a queue", labels=["model", "tier"])
        age = GaugeMetricFamily(
            "capq_queue_oldest_age_seconds",
            "Age of the oldest waiting shard (0 when the queue is empty)",
            labels=["model", "tier"],
        )
        for model in MODEL_NAMES:
            for tier in TIERS:
                q = read_queue(self.client, caption_queue(model, tier), scan=False)
                depth.add_metric([model, tier], q.shards)
                age.add_metric([model, tier], max(0.0, now - q.oldest_at) if q.oldest_at else 0.0)
        eval_depth = GaugeMetricFamily("capq_eval_queue_tasks", "Evaluation tasks waiting in capq.eval")
        eval_depth.add_metric([], self.client.llen(EVAL_QUEUE))
        online = GaugeMetricFamily("capq_workers_online", "Workers with a live heartbeat", labels=["model"])
        live = live_workers(self.client)
        for model in (*MODEL_NAMES, "eval"):
            online.add_metric([model], len(live.get(model, [])))
        dead = GaugeMetricFamily("capq_dead_letters", "Dead letters waiting for a re-drive", labels=["model"])
        per_model = {m: 0 for m in MODEL_NAMES}
        for raw in self.client.hvals(DLQ_KEY):
            shard = shard_of(json.loads(raw).get("args"))
            if shard and shard.model in per_model:
                per_model[shard.model] += 1
        for model, n in per_model.items():
            dead.add_metric([model], n)
        yield from (depth, age, eval_depth, online, dead)
