"""names: every Redis key, queue name and tier in one place, all under the capq prefix."""

import os
import socket

# Highest service first: this order is the order a worker drains its queues in.
TIERS = ("premium", "plus", "free")

PREFIX = "capq"
EVAL_QUEUE = f"{PREFIX}.eval"
DLQ_KEY = f"{PREFIX}:dlq"
RATE_KEY = f"{PREFIX}:rate:"  # + api key hash + ":" + hour window
WORKER_HEARTBEAT_KEY = f"{PREFIX}:worker:"  # + worker id: build it with heartbeat_key(worker_id(...))


def worker_id(name: str, pid: int | str | None = None) -> str:
    """`name@host:pid` (this host; this process when pid is None): what heartbeats, logs and captions call a
    worker process. Pass "*" for name or pid to build a pattern for heartbeat_key."""
    return f"{name}@{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def heartbeat_key(wid: str) -> str:
    """The Redis key a worker's heartbeat lives under (`"*"`: every worker's, for SCAN)."""
    return WORKER_HEARTBEAT_KEY + wid


def worker_of_heartbeat(key: str) -> str:
    """The worker id in a heartbeat key."""
    return key[len(WORKER_HEARTBEAT_KEY) :]


def caption_queue(model: str, tier: str) -> str:
    """The queue that holds `tier` work for workers pinned to `model`."""
    return f"{PREFIX}.{model}.{tier}"


def caption_queues(model: str) -> list[str]:
    """A model's queues in drain order, premium first."""
    return [caption_queue(model, t) for t in TIERS]


def tier_of_queue(queue: str) -> str | None:
    tier = queue.rsplit(".", 1)[-1]
    return tier if tier in TIERS else None


CAPTION_TASK = "capq.caption_shard"  # its message: capq.shard.ShardMessage
ITEM_QUEUED = "queued"  # a job item waiting for its caption (storage.jobs.OPEN)
EVAL_TASK = "capq.evaluate"
# Issue 13: the API asks an evaluation worker for a paired comparison (GET /v1/evaluations/compare).
COMPARE_TASK = "capq.compare"

# The captioning architectures capq ships adapters for (capq.catalog holds their details).
MODEL_NAMES = ("blip", "blip2", "git", "vit-gpt2")

# Issue 15: per-key request/image counters and per-owner daily quotas
KEY_STATS_KEY = f"{PREFIX}:keystat:"  # + key prefix + ":" + what + ":" + window
QUOTA_KEY = f"{PREFIX}:quota:"  # + owner + ":" + UTC day
RETENTION_TASK = "capq.retention"
# Issue 18: recent throughput of each worker (a sorted set per model), read for job ETAs.
THROUGHPUT_KEY = f"{PREFIX}:throughput:"  # + model
QUALITY_TASK = "capq.quality"  # issue 18: reference-free quality of production captions
ALIAS_COMPARE_TASK = "capq.alias_compare"  # issue 18: the arms of every model alias, compared with significance

# Issue 14: translation runs on its own queue, so a caption worker never waits on a provider.
TRANSLATE_QUEUE = f"{PREFIX}.translate"
TRANSLATE_TASK = "capq.translate_captions"
TRANSLATE_CACHE_KEY = f"{PREFIX}:tr:"  # + target + ":" + sha256 of the text
TRANSLATE_PROVIDERS = ("google", "azure", "aws", "offline")
# Issue 11: healing. Who holds which unacked delivery, who heals, and which Redis is this (see workers.healing).
HELD_KEY = f"{PREFIX}:held"  # hash: kombu delivery tag -> worker id that received it
INFLIGHT_KEY = f"{PREFIX}:inflight:"  # + delivery tag: the shas of the batch being captioned (poison accounting)
DEATHS_KEY = f"{PREFIX}:deaths:"  # + job id: hash sha256 -> times a worker died captioning it
HEALER_LOCK = f"{PREFIX}:healer"  # the one live worker that heals holds this
REDIS_EPOCH_KEY = f"{PREFIX}:epoch"  # a random id: when it changes or vanishes, Redis lost its queues
REDRIVES_KEY = f"{PREFIX}:redrives"  # hash: job id + first sha256 of a shard -> automatic re-drives so far
MODELS_SEEN_KEY = f"{PREFIX}:models_seen"  # hash: model (or eval) -> last heartbeat of any of its workers, epoch s
OUTAGES_KEY = f"{PREFIX}:outages"  # hash: service ("database", "object store") -> first seen unreachable, epoch s
SENT_SEQ_KEY = f"{PREFIX}:sent:"  # + job id: the last item seq published, set in the same transaction as the push
