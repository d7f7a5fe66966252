"""worker_bench: worker throughput through real queues: full-size BLIP-base (random weights) and a no-op model.

Run: `python -m bench.worker_bench [--images N]` with the local stack up (make bench does both).
Prints markdown rows for docs/benchmarks.md. Every ratio compares figures measured in this same run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from capq.celery_app import create_app
from capq.enqueue import enqueue_pending
from capq.settings import Settings, load_settings
from storage.blobs import ImageStore
from storage.db import Mongo
from storage.jobs import JobStore
from tooling import procs
from tooling.images import random_images
from tooling.paths import LOG_DIR
from tooling.workers import wait_heartbeat

REPO = Path(__file__).resolve().parents[1]
FULLSIZE_DIR = REPO / ".capq" / "bench-models" / "blip-base-random-v2"


def build_blip_base(out: Path) -> Path:
    """BLIP-base architecture (ViT-B/16 at 384 px, 12-layer BERT decoder, 30,524-token vocabulary) with random
    weights, saved as a checkpoint folder: bench.gpu_bench's model, so CPU and GPU figures are of the same one.
    """
    from transformers import BlipProcessor

    from bench.gpu_bench import ARCHITECTURES
    from tooling import tiny

    if tiny.is_complete(out):
        return out
    model_cls, config, (tokenizer, image_processor) = ARCHITECTURES["blip-base"][1]()
    out.mkdir(parents=True, exist_ok=True)
    tiny.save_model(out, model_cls, config, BlipProcessor(image_processor, tokenizer))
    (out / tiny.MARKER).write_text(tiny.TINY_VERSION + "\n")
    return out


def bench_settings(batch_size: int, redis_db: int = 14) -> tuple[Settings, dict]:
    tag = uuid.uuid4().hex[:8]
    base = load_settings()
    env = {
        "CAPQ_REDIS_URL": urlunsplit(urlsplit(base.redis_url)._replace(path=f"/{redis_db}")),
        "CAPQ_MONGO_URL": base.mongo_url,
        "CAPQ_S3_ENDPOINT": base.s3_endpoint,
        "CAPQ_MONGO_DB": f"capq_bench_{tag}",
        "CAPQ_S3_BUCKET": f"capq-bench-{tag}",
        "CAPQ_BATCH_SIZE": str(batch_size),
        "CAPQ_LOG_JSON": "false",
    }
    s = load_settings(env)
    ImageStore(s).ensure_bucket()
    Mongo(s).ensure_indexes()
    redis.Redis.from_url(s.redis_url).flushdb()
    return s, env


def drop(s: Settings) -> None:
    Mongo(s).client.drop_database(s.mongo_db)
    ImageStore(s).drop_bucket()


def start_worker(env: dict, argv: list[str], model: str) -> subprocess.Popen:
    """`python ARGV` (a worker for `model`), once it consumes; its log under LOG_DIR."""
    proc = procs.spawn(
        [sys.executable, *argv], LOG_DIR / f"bench-{model}-{time.strftime('%H%M%S')}.log", env={**os.environ, **env}
    )
    wait_heartbeat(proc, model, env["CAPQ_REDIS_URL"], timeout_s=600, settle_s=1.0)
    return proc


def run_job(s: Settings, images: list[tuple[str, bytes]], model: str) -> tuple[float, float]:
    """Record a job, then time it from enqueue to its last item; -> (wall seconds, seconds inside generate).

    Uploading and recording are the producer's work (bench.submit_bench measures them), so they happen
    before the clock starts; the clock covers queue, fetch, decode, model and writes.
    """
    store, jobs = ImageStore(s), JobStore(s)
    with ThreadPoolExecutor(8) as pool:
        shas = list(pool.map(lambda item: store.put(item[1])[0], images))
    job, _ = jobs.create("bench", "free", [model], "default")
    jobs.add_items(
        job["_id"],
        "bench",
        [
            {"sha256": sha, "model": model, "preset": "default", "file_name": name}
            for sha, (name, _) in zip(shas, images)
        ],
    )
    jobs.set_state(job["_id"], "queued")
    t0 = datetime.now(UTC)
    enqueue_pending(create_app(s), jobs, job["_id"], "free", s.batch_size * s.shard_batches)
    # Poll gently (every poll is a query the worker competes with): the workers close the job.
    while jobs.get(job["_id"])["state"] != "done":
        time.sleep(0.5)
    last = jobs.results.find({"job_id": job["_id"]}).sort("updated_at", -1).limit(1)[0]["updated_at"]
    captions = Mongo(s)["captions"].find({"job_id": job["_id"]}, {"timings": 1})
    return (last - t0).total_seconds(), sum(c["timings"]["model_s"] for c in captions)


def raw_get_rate(s: Settings, shas: list[str], threads: int) -> float:
    store = ImageStore(s)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(store.get, shas))
    return len(shas) / (time.perf_counter() - t0)


def raw_write_rate(s: Settings, n: int, bulk: int) -> float:
    """Images/s the database alone sustains for a worker's two writes per image: its caption and its item's
    result, as plain inserts into collections with the real indexes, in shard-sized bulks."""
    from storage.db import INDEXES

    db = Mongo(s)
    captions, results = db["raw_captions"], db["raw_results"]
    captions.create_indexes(INDEXES["captions"])
    results.create_indexes(INDEXES["job_results"])
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    for start in range(0, n, bulk):
        shas = [f"{k:064x}" for k in range(start, min(start + bulk, n))]
        captions.insert_many(
            [
                {
                    "sha256": sha,
                    "model": "blip",
                    "checkpoint": "raw",
                    "config_hash": "h",
                    "preset": "default",
                    "caption": "x",
                    "job_id": "raw",
                    "created_at": now,
                }
                for sha in shas
            ],
            ordered=False,
        )
        results.insert_many(
            [
                {
                    "job_id": "raw",
                    "model": "blip",
                    "preset": "default",
                    "sha256": sha,
                    "owner": "raw",
                    "state": "done",
                    "caption": "x",
                    "updated_at": now,
                }
                for sha in shas
            ],
            ordered=False,
        )
    return n / (time.perf_counter() - t0)


def model_runs(n_images: int, dtypes: list[str]) -> None:
    """Full-size BLIP-base (random weights) on the CPU at batch 1 and batch 8, in each dtype."""
    print("| run | images | wall s | images/s | share outside generate |")
    print("| --- | --- | --- | --- | --- |")
    ckpt = build_blip_base(FULLSIZE_DIR)
    images = random_images(n_images, seed=11, size=384)
    ratios = {}
    for dtype in dtypes:
        rates = {}
        for batch in (1, 8):
            s, env = bench_settings(batch)
            proc = start_worker(
                env,
                [
                    "-m",
                    "capq",
                    "worker",
                    "--model",
                    "blip",
                    "--checkpoint",
                    str(ckpt),
                    "--dtype",
                    dtype,
                    "--batch-size",
                    str(batch),
                ],
                "blip",
            )
            try:
                run_job(s, images[:2], "blip")  # warm-up: first generate pays one-off costs
                wall, model_s = run_job(s, images[2:], "blip")
            finally:
                procs.stop(proc, timeout_s=60)
                drop(s)
            n = len(images) - 2
            rates[batch] = n / wall
            print(
                f"| BLIP-base random, CPU {dtype}, batch {batch} | {n} | {wall:.1f} | {rates[batch]:.2f} "
                f"| {1 - model_s / wall:.1%} |",
                flush=True,
            )
        ratios[dtype] = rates[8] / rates[1]
    print()
    for dtype, ratio in ratios.items():
        print(f"{dtype}: batch 8 / batch 1 throughput {ratio:.2f}x (goal >= 2x)")
    print()


def plumbing_runs(n_images: int, rounds: int) -> None:
    """A no-op model through the real plumbing vs raw S3 GET, alternated so both see the same machine."""
    from storage.blobs import sha256_hex

    s, env = bench_settings(8)
    proc = start_worker(env, ["-m", "bench.noop_worker"], "blip")
    print("| round | plumbing images/s | raw S3 GET images/s (same 8 threads) | ratio |")
    print("| --- | --- | --- | --- |")
    ratios = []
    try:
        run_job(s, random_images(16, seed=99, size=64), "blip")  # warm-up
        for r in range(rounds):
            images = random_images(n_images, seed=12 + r, size=64)  # new images: a reused caption skips the fetch
            wall, _ = run_job(s, images, "blip")
            plumbing = len(images) / wall
            get_rate = raw_get_rate(s, [sha256_hex(d) for _, d in images], threads=8)
            ratios.append(plumbing / get_rate)
            print(f"| {r + 1} | {plumbing:.0f} | {get_rate:.0f} | {ratios[-1]:.2f} |")
        write_rate = raw_write_rate(s, n_images, bulk=s.batch_size * s.shard_batches)
    finally:
        procs.stop(proc, timeout_s=60)
        drop(s)
    print(f"\nraw database writes alone (caption + result inserts per image): {write_rate:.0f} images/s")
    print(f"plumbing / raw GET, median of {rounds} rounds: {sorted(ratios)[len(ratios) // 2]:.2f} (goal >= 0.5)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=32, help="images per BLIP-base run")
    parser.add_argument("--noop-images", type=int, default=1000, help="images per plumbing round")
    parser.add_argument("--rounds", type=int, default=3, help="plumbing rounds (the median ratio is reported)")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma-separated dtypes of the BLIP-base runs")
    parser.add_argument("--plumbing-only", action="store_true", help="skip the BLIP-base runs")
    args = parser.parse_args()
    if not args.plumbing_only:
        model_runs(args.images, args.dtypes.split(","))
    plumbing_runs(args.noop_images, args.rounds)


if __name__ == "__main__":
    main()
