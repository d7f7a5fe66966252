"""submit_bench: submission throughput (validate + upload + record + enqueue) against raw S3 PUTs, same bytes, same
threads."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from capq.settings import Settings, load_settings
from tooling import procs
from tooling.images import noise_jpeg
from tooling.stack import spawn_redis


def make_images(folder: Path, n: int) -> int:
    """n distinct JPEGs of roughly 20-100 KB (noise over a gradient); returns total bytes."""
    total = 0
    for i in range(n):
        side = 160 + (i * 37) % 180  # 160..339 px of noise at q85: ~20-100 KB
        data = noise_jpeg((side, side), quality=85)
        (folder / f"img-{i:05}.jpg").write_bytes(data)
        total += len(data)
    return total


def raw_puts(settings: Settings, files: list[Path], threads: int) -> float:
    """Seconds to PUT every file's bytes (read from disk, as submit does) with `threads` threads; no checks."""
    from storage.blobs import ImageStore

    store = ImageStore(settings)
    store.ensure_bucket()

    def put(path: Path) -> None:
        store.client.put_object(
            Bucket=settings.s3_bucket,
            Key=f"raw/{path.parent.name}/{path.name}",
            Body=path.read_bytes(),
            ContentType="image/jpeg",
        )

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, files))
    return time.perf_counter() - t0


def empty_bucket(settings: Settings) -> None:
    from storage.blobs import ImageStore

    ImageStore(settings).drop_bucket()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="raw/submit pairs on new images; the median is reported")
    parser.add_argument("--concurrency", type=int, default=None, help="threads (default CAPQ_UPLOAD_CONCURRENCY)")
    args = parser.parse_args()

    base = load_settings()
    threads = args.concurrency or base.upload_concurrency
    tag = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="capq-bench-"))
    # A throwaway Redis, so benchmark shards never reach a real worker's queue.
    redis_proc, redis_url = spawn_redis(work / "redis")
    env = {
        f"CAPQ_{k.upper()}": (",".join(f"{a}={b}" for a, b in v.items()) if isinstance(v, dict) else str(v))
        for k, v in base.model_dump().items()
    }
    env |= {
        "CAPQ_REDIS_URL": redis_url,
        "CAPQ_MONGO_DB": f"capq_bench_{tag}",
        "CAPQ_HOME": str(work / "home"),
        "CAPQ_UPLOAD_CONCURRENCY": str(threads),
    }
    sub = load_settings(env | {"CAPQ_S3_BUCKET": f"capq-bench-{tag}"})
    raw = load_settings(env | {"CAPQ_S3_BUCKET": f"capq-bench-raw-{tag}"})
    try:
        from producer.submit import celery_app, submit
        from storage.blobs import ImageStore
        from storage.db import Mongo

        ImageStore(sub).ensure_bucket()
        Mongo(sub).ensure_indexes()
        celery_app(sub)  # a process's one-off set-up, not per-image work
        n = args.images
        print(f"{n} images per round, {threads} threads, S3 {base.s3_endpoint}, MongoDB {base.mongo_url}\n")
        print(
            "| round | submit (validate+upload+record+enqueue) img/s | raw S3 PUT img/s | ratio | stages: uploaded / "
            "recorded / enqueued (s) |"
        )
        print("|---:|---:|---:|---:|---|")
        ratios = []
        for r in range(args.rounds):
            folder = work / f"images-{r}"
            folder.mkdir()
            total = make_images(folder, n)
            files = sorted(folder.iterdir())
            raw_s = raw_puts(raw, files, threads)
            marks: dict[str, float] = {}

            t0 = time.perf_counter()

            def progress(stage: str, done: int, total_: int, marks=marks, t0=t0) -> None:
                if stage != "validating" or done == total_:
                    marks[stage] = time.perf_counter() - t0

            result = submit(sub, [folder], "blip", owner="bench", progress=progress)
            submit_s = time.perf_counter() - t0
            assert result.accepted == n and result.enqueued == n, result.as_dict()
            ratios.append(raw_s / submit_s)
            print(
                f"| {r + 1} | {n / submit_s:.0f} | {n / raw_s:.0f} | {ratios[-1]:.2f} | {marks['validating']:.1f} / "
                f"{marks['recorded']:.1f} / {marks['enqueued']:.1f} ({total / n / 1024:.0f} KB mean) |"
            )
        print(
            f"\nsubmit / raw PUT, median of {len(ratios)} rounds: {sorted(ratios)[len(ratios) // 2]:.2f} (goal >= 0.70)"
        )
    finally:
        for s in (sub, raw):
            try:
                empty_bucket(s)
            except Exception as exc:  # cleanup must not hide the result or the real error
                print(f"cleanup of bucket {s.s3_bucket} failed: {exc}")
        from storage.db import Mongo

        Mongo(sub).client.drop_database(sub.mongo_db)
        procs.stop(redis_proc, timeout_s=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
