"""soak_bench: 20,000 images through one worker; its RSS at 1,000 and at the end, and what Redis and MongoDB keep.

Run: `python -m bench.soak_bench [--images 20000] [--model tiny|noop]` with the local stack up. One worker (the tiny
BLIP of tests/e2e, built offline, or bench.noop_worker's no-op model) captions jobs of `--chunk` new images one
after another. Reported: the worker's resident memory (its process tree) after the first 1,000 images and after
the last (goal: growth < 10 %), and the growth of Redis (used memory, keys) and MongoDB (data size) per image
between those two points, beside the size of the records themselves (jobs, job_items, job_results, captions).
Prints markdown rows for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import bson
import redis

from bench.worker_bench import bench_settings, drop, run_job, start_worker
from storage.db import Mongo
from tooling import procs
from tooling.images import random_images
from tooling.paths import TINY_DIR

GOAL = 0.10
RECORDS = ("jobs", "job_items", "job_results", "captions")


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total / 1024


def snapshot(s, proc, done: int) -> dict:
    client, db = redis.Redis.from_url(s.redis_url), Mongo(s)
    records = {name: sum(len(bson.encode(d)) for d in db[name].find()) for name in RECORDS}
    return {
        "images": done,
        "rss_mib": rss_mib(proc.pid),
        "redis_bytes": client.info("memory")["used_memory"],
        "redis_keys": client.dbsize(),
        "mongo_bytes": db.db.command("dbstats")["dataSize"],
        "records_bytes": sum(records.values()),
        "docs": {name: db[name].estimated_document_count() for name in db.db.list_collection_names()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20_000, help="images in all (the goal's figure: 20,000)")
    parser.add_argument("--chunk", type=int, default=1000, help="images per job; RSS is first read after one")
    parser.add_argument("--model", choices=("tiny", "noop"), default="tiny", help="tiny BLIP, or the no-op model")
    parser.add_argument("--redis-db", type=int, default=14, help="Redis database the bench may flush")
    args = parser.parse_args()
    s, env = bench_settings(8, args.redis_db)
    if args.model == "tiny":
        from tooling.tiny import make_tiny

        make_tiny(TINY_DIR)
        argv = ["-m", "capq", "worker", "--model", "blip", "--checkpoint", str(TINY_DIR / "blip")]
    else:
        argv = ["-m", "bench.noop_worker"]
    proc = start_worker(env, argv, "blip")
    marks, done, t0 = [], 0, time.monotonic()
    try:
        print("| images | worker RSS MiB | Redis used memory MiB | Redis keys | MongoDB data MiB | images/s (chunk) |")
        print("| --- | --- | --- | --- | --- | --- |")
        while done < args.images:
            n = min(args.chunk, args.images - done)
            # New images each chunk (a stored caption would be reused without a fetch); small, as plumbing is
            # what is soaked, not decoding.
            wall, _ = run_job(s, random_images(n, seed=done + 1, size=64), "blip")
            done += n
            if done == min(args.chunk, args.images) or done >= args.images:
                marks.append(snapshot(s, proc, done))
                m = marks[-1]
                print(
                    f"| {done:,} | {m['rss_mib']:.1f} | {m['redis_bytes'] / 2**20:.2f} | {m['redis_keys']} "
                    f"| {m['mongo_bytes'] / 2**20:.1f} | {n / wall:.0f} |",
                    flush=True,
                )
    finally:
        procs.stop(proc, timeout_s=60)
        drop(s)
    first, last = marks[0], marks[-1]
    n = last["images"] - first["images"]
    print(f"\n{args.model} model, {args.images:,} images in {time.monotonic() - t0:.0f} s, jobs of {args.chunk:,}")
    print(
        f"worker RSS {first['rss_mib']:.1f} MiB at {first['images']:,} images, {last['rss_mib']:.1f} MiB at "
        f"{last['images']:,}: growth {last['rss_mib'] / first['rss_mib'] - 1:+.1%} (goal < {GOAL:.0%})"
    )
    if n:
        mongo = (last["mongo_bytes"] - first["mongo_bytes"]) / n
        records = (last["records_bytes"] - first["records_bytes"]) / n
        print(
            f"Redis per image: {(last['redis_bytes'] - first['redis_bytes']) / n:+.1f} bytes of used memory, "
            f"{(last['redis_keys'] - first['redis_keys']) / n:+.4f} keys"
        )
        print(
            f"MongoDB per image: {mongo:.0f} bytes of data, of which the records (jobs, items, results, captions) "
            f"{records:.0f}: {mongo - records:+.0f} beyond them"
        )
        docs = {name: (last["docs"].get(name, 0) - first["docs"].get(name, 0)) / n for name in last["docs"]}
        print("documents per image, by collection: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(docs.items()) if v))


if __name__ == "__main__":
    main()
