"""worker_bench: worker throughput through real queues: full-size BLIP-base (random weights) and a no-op model.

Run: `python -m bench.worker_bench [--images N]` with the local stack up (make bench does both).
Prints markdown rows for docs/benchmarks.md. Every ratio compares figures measured in this same run.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from capq.names import WORKER_HEARTBEAT_KEY
from capq.settings import Settings, load_settings
from storage.blobs import ImageStore
from storage.db import Mongo
from storage.jobs import JobStore

REPO = Path(__file__).resolve().parents[1]
FULLSIZE_DIR = REPO / ".capq" / "bench-models" / "blip-base-random"


def build_blip_base(out: Path) -> Path:
    """BLIP-base architecture (ViT-B/16 at 384 px, 12-layer BERT decoder) with random weights.

    The vocabulary is the tiny tokenizer's, so only the embedding and output layers are smaller than
    the real checkpoint's; every transformer layer has the real size and costs the real compute.
    """
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor

    from workers import tiny

    if tiny.is_complete(out):
        return out
    tokenizer = tiny._bert_tokenizer(bos="[DEC]")
    config = BlipConfig(text_config=dict(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.sep_token_id,
        sep_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id))
    processor = BlipProcessor(BlipImageProcessorPil(size={"height": 384, "width": 384}), tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    tiny._save(out, BlipForConditionalGeneration, config, processor)
    (out / tiny.MARKER).write_text(tiny.TINY_VERSION + "\n")
    return out


def bench_settings(batch_size: int) -> tuple[Settings, dict]:
    tag = uuid.uuid4().hex[:8]
    base = load_settings()
    env = {
        "CAPQ_REDIS_URL": urlunsplit(urlsplit(base.redis_url)._replace(path="/14")), "CAPQ_MONGO_URL": base.mongo_url,
        "CAPQ_S3_ENDPOINT": base.s3_endpoint, "CAPQ_MONGO_DB": f"capq_bench_{tag}",
        "CAPQ_S3_BUCKET": f"capq-bench-{tag}", "CAPQ_BATCH_SIZE": str(batch_size), "CAPQ_SHARD_BATCHES": "4",
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
    proc = subprocess.Popen([sys.executable, *argv], env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    client = redis.Redis.from_url(env["CAPQ_REDIS_URL"])
    while not client.keys(f"{WORKER_HEARTBEAT_KEY}{model}@*:{proc.pid}"):
        if proc.poll() is not None:
            raise SystemExit(f"worker exited with {proc.returncode}")
        time.sleep(0.2)
    time.sleep(1.0)  # the consumer starts just after the heartbeat
    return proc


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)


def run_job(s: Settings, images: list[tuple[str, bytes]], model: str) -> tuple[float, float]:
    """Submit, wait for completion; -> (wall seconds from enqueue to done, seconds inside generate)."""
    from tests.e2e.conftest import make_job

    store = ImageStore(s)
    with ThreadPoolExecutor(8) as pool:  # uploads are not part of the worker's time
        list(pool.map(lambda item: store.put(item[1]), images))
    jobs = JobStore(s)
    t0 = datetime.now(timezone.utc)
    job_id = make_job(s, images, model, upload=False)
    # Poll gently (each poll is a query the worker competes with); the end time comes from the items.
    while jobs.counts(job_id)["queued"]:
        time.sleep(0.5)
    last = Mongo(s)["job_items"].find({"job_id": job_id}).sort("updated_at", -1).limit(1)[0]["updated_at"]
    wall = (last - t0).total_seconds()
    captions = Mongo(s)["captions"].find({"job_id": job_id}, {"timings": 1})
    model_s = sum(c["timings"]["model_s"] for c in captions)
    return wall, model_s


def raw_get_rate(s: Settings, shas: list[str], threads: int) -> float:
    store = ImageStore(s)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(store.get, shas))
    return len(shas) / (time.perf_counter() - t0)


def raw_write_rate(s: Settings, n: int, bulk: int) -> float:
    """Images/s the database alone sustains for a worker's two writes per image (caption upsert, item update)."""
    from pymongo import UpdateOne

    coll = Mongo(s)["raw_write_probe"]
    coll.create_index([("k", 1)], unique=True)
    t0 = time.perf_counter()
    for start in range(0, n, bulk):
        keys = range(start, min(start + bulk, n))
        coll.bulk_write([UpdateOne({"k": k}, {"$setOnInsert": {"caption": "x"}}, upsert=True) for k in keys])
        coll.bulk_write([UpdateOne({"k": k}, {"$set": {"state": "done"}}) for k in keys])
    return n / (time.perf_counter() - t0)


def main() -> None:
    from tests.e2e.conftest import random_images

    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=32, help="images per BLIP-base run")
    parser.add_argument("--noop-images", type=int, default=1000)
    args = parser.parse_args()

    print("| run | images | wall s | images/s | share outside generate |")
    print("| --- | --- | --- | --- | --- |")
    ckpt = build_blip_base(FULLSIZE_DIR)
    rates = {}
    images = random_images(args.images, seed=11, size=384)
    for batch in (1, 8):
        s, env = bench_settings(batch)
        proc = start_worker(env, ["-m", "capq", "worker", "--model", "blip", "--checkpoint", str(ckpt),
                                  "--batch-size", str(batch)], "blip")
        try:
            run_job(s, images[:2], "blip")  # warm-up: first generate pays one-off costs
            wall, model_s = run_job(s, images[2:], "blip")
        finally:
            stop(proc)
            drop(s)
        n = len(images) - 2
        rates[batch] = n / wall
        print(f"| BLIP-base random, CPU, batch {batch} | {n} | {wall:.1f} | {rates[batch]:.2f} | {1 - model_s / wall:.1%} |")
    print(f"\nbatch 8 / batch 1 throughput: {rates[8] / rates[1]:.2f}x (goal >= 2x)\n")

    s, env = bench_settings(8)
    noop_images = random_images(args.noop_images, seed=12, size=64)
    proc = start_worker(env, ["-m", "bench.noop_worker"], "blip")
    try:
        run_job(s, noop_images[:16], "blip")
        wall, _ = run_job(s, noop_images[16:], "blip")
        from storage.blobs import sha256_hex

        get_rate = raw_get_rate(s, [sha256_hex(d) for _, d in noop_images[16:]], threads=8)
        write_rate = raw_write_rate(s, len(noop_images) - 16, bulk=s.batch_size * s.shard_batches)
    finally:
        stop(proc)
        drop(s)
    plumbing = (len(noop_images) - 16) / wall
    print("| run | images/s |\n| --- | --- |")
    print(f"| no-op model through queue + fetch + decode + write | {plumbing:.0f} |")
    print(f"| raw S3 GET, same 8 threads | {get_rate:.0f} |")
    print(f"| raw database writes alone (2 per image, shard-sized bulks) | {write_rate:.0f} |")
    print(f"\nplumbing / raw GET: {plumbing / get_rate:.2f} (goal >= 0.5); "
          f"plumbing / raw database writes: {plumbing / write_rate:.2f}")


if __name__ == "__main__":
    main()
