"""heal_bench: time from a worker's kill -9 to its shard being worked again by another worker, with defaults.

Run: `python -m bench.heal_bench [--rounds 3]` with the local stack up. Two tiny-model workers run; a one-shard job
starts on one of them, which is killed with SIGKILL mid-shard; the clock stops when the other worker has
received the shard. CAPQ_VISIBILITY_TIMEOUT_S stays at its default (an hour): without healing the
shard would wait that long. Prints markdown rows for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import redis

from bench.worker_bench import drop
from capq.celery_app import create_app
from capq.enqueue import enqueue_pending
from capq.names import HELD_KEY
from capq.settings import load_settings
from storage.blobs import ImageStore
from storage.db import Mongo
from storage.errors import AlreadyFinished
from storage.jobs import JobStore
from tooling.images import random_images
from tooling.paths import TINY_DIR
from tooling.tiny import make_tiny
from tooling.workers import Workers

GOAL_S = 30.0


def settings_for_run(redis_url: str | None):
    tag = uuid.uuid4().hex[:8]
    base = load_settings()
    env = {
        "CAPQ_REDIS_URL": redis_url or urlunsplit(urlsplit(base.redis_url)._replace(path="/14")),
        "CAPQ_MONGO_URL": base.mongo_url,
        "CAPQ_S3_ENDPOINT": base.s3_endpoint,
        "CAPQ_MONGO_DB": f"capq_bench_{tag}",
        "CAPQ_S3_BUCKET": f"capq-bench-{tag}",
        "CAPQ_BATCH_SIZE": "1",
        "CAPQ_SHARD_BATCHES": "40",
        "CAPQ_LOG_JSON": "false",
    }
    s = load_settings(env)
    ImageStore(s).ensure_bucket()
    Mongo(s).ensure_indexes()
    redis.Redis.from_url(s.redis_url).flushdb()
    return s, env


def one_round(s, env, fleet: Workers, live: dict[int, object], seed: int) -> float:
    store, jobs, client = ImageStore(s), JobStore(s), redis.Redis.from_url(s.redis_url, decode_responses=True)
    images = random_images(40, seed=seed)
    job, _ = jobs.create("bench", "free", ["blip"], "default")
    jobs.add_items(
        job["_id"],
        "bench",
        [{"sha256": store.put(d)[0], "model": "blip", "preset": "default", "file_name": n} for n, d in images],
    )
    jobs.set_state(job["_id"], "queued")
    enqueue_pending(create_app(s), jobs, job["_id"], "free", s.batch_size * s.shard_batches)
    while jobs.results.count_documents({"job_id": job["_id"]}) < 2:
        time.sleep(0.1)
    tag, holder = next(
        (t, h)
        for t, h in client.hgetall(HELD_KEY).items()
        if client.hget("unacked", t) and job["_id"] in client.hget("unacked", t)
    )
    pid = int(holder.rsplit(":", 1)[1])
    t_kill = time.monotonic()
    fleet.kill9(live.pop(pid))
    others = {f"blip@{socket.gethostname()}:{p}" for p in live}
    # Worked again: another worker has received the shard (it records the delivery as held on receipt).
    while client.hget(HELD_KEY, tag) not in others:
        time.sleep(0.1)
    took = time.monotonic() - t_kill
    try:
        jobs.cancel(job["_id"])  # frees the survivor within a batch for the next round
    except AlreadyFinished:  # the survivor finished the shard first (tiny model, busy machine): nothing to free
        pass
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--redis-url",
        help="a Redis (database) of the bench's own; default: database 14 of "
        "CAPQ_REDIS_URL's server, which the bench flushes",
    )
    args = parser.parse_args()
    s, env = settings_for_run(args.redis_url)
    make_tiny(TINY_DIR, ["blip"])  # the tests' tiny models (built here if no test has run yet)
    fleet = Workers(env, TINY_DIR)
    live: dict[int, object] = {}
    times = []
    print(
        f"heartbeat lapse CAPQ_WORKER_LOST_AFTER_S={s.worker_lost_after_s}, CAPQ_HEAL_INTERVAL_S="
        f"{s.heal_interval_s}, CAPQ_VISIBILITY_TIMEOUT_S={s.visibility_timeout_s}\n"
    )
    print("| round | kill -9 to shard worked again, s |")
    print("| --- | --- |")
    try:
        for r in range(args.rounds):
            while len(live) < 2:
                p = fleet.start("blip", settle_s=1.0)
                live[p.pid] = p
            times.append(one_round(s, env, fleet, live, seed=40 + r))
            print(f"| {r + 1} | {times[-1]:.1f} |", flush=True)
    finally:
        fleet.kill9(*live.values())  # they may be mid-shard: no need to wait for a warm shutdown
        drop(s)
    median = statistics.median(times)
    print(
        f"\nmedian of {len(times)}: {median:.1f} s = {median / GOAL_S:.2f} of the 30 s goal; "
        f"{median / s.visibility_timeout_s:.3f} of the visibility timeout it replaces"
    )


if __name__ == "__main__":
    main()
