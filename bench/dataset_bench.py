"""dataset_bench: webdataset shard input (images/s into the queue) vs raw reads of the same tars, and Parquet export
(rows/s) vs pyarrow writing the same rows from memory."""

from __future__ import annotations

import argparse
import io
import shutil
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from bench.scratch import scratch
from capq.settings import Settings
from tooling.images import noise_jpeg


def make_shards(folder: Path, shards: int, per_shard: int) -> int:
    """Shards of distinct noise JPEGs (~20-100 KB) with a .json member each; -> total image bytes."""
    total = 0
    for s in range(shards):
        with tarfile.open(folder / f"{s:05}.tar", "w") as tar:
            for i in range(per_shard):
                side = 160 + ((s * per_shard + i) * 37) % 180
                jpeg = noise_jpeg((side, side), quality=85)
                for name, data in ((f"{s:05}{i:05}.jpg", jpeg), (f"{s:05}{i:05}.json", b'{"n": 1}')):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                total += len(jpeg)
    return total


def raw_read(paths: list[Path]) -> int:
    """Every member's bytes, read in order with tarfile in its faster, seekable mode (stream mode is ~10% slower
    here): the floor of any tarfile-based shard reader; -> images seen."""
    n = 0
    for path in paths:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                tar.extractfile(member).read()
                n += member.name.endswith(".jpg")
    return n


def raw_read_and_put(settings: Settings, paths: list[Path]) -> int:
    """The same reads plus a plain S3 PUT of each image on the submission's threads: the floor with storage."""
    from storage.blobs import ImageStore

    store, n = ImageStore(settings), 0
    with ThreadPoolExecutor(settings.upload_concurrency) as pool:
        futures = []
        for path in paths:
            with tarfile.open(path, "r|") as tar:
                for member in tar:
                    if member.name.endswith(".jpg"):
                        data = tar.extractfile(member).read()
                        futures.append(
                            pool.submit(
                                store.client.put_object,
                                Bucket=settings.s3_bucket,
                                Key=f"raw/{path.name}/{member.name}",
                                Body=data,
                            )
                        )
                        n += 1
        for f in futures:
            f.result()
    return n


def shard_bench(settings: Settings, raw_settings: Settings, work: Path, shards: int, per_shard: int) -> None:
    from producer.shards import iter_shards
    from producer.submit import submit

    folder = work / "shards"
    folder.mkdir()
    total = make_shards(folder, shards, per_shard)
    paths = sorted(folder.glob("*.tar"))
    n = shards * per_shard
    raw_times, reader_times = [], []
    for _ in range(5):  # alternated, best of five: the page cache and a shared machine's noise hit both alike
        t0 = time.perf_counter()
        assert raw_read(paths) == n
        raw_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        assert sum(1 for _ in iter_shards(str(folder / f"{{00000..{shards - 1:05}}}.tar"), settings, "bench")) == n
        reader_times.append(time.perf_counter() - t0)
    raw_s, reader_s = min(raw_times), min(reader_times)
    t0 = time.perf_counter()
    for path in paths:
        path.read_bytes()
    bytes_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert raw_read_and_put(raw_settings, paths) == n
    put_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = submit(settings, [str(folder / f"{{00000..{shards - 1:05}}}.tar")], "blip", owner="bench")
    submit_s = time.perf_counter() - t0
    assert (result.accepted, result.enqueued) == (n, n), result.as_dict()
    print(
        f"## webdataset input: {shards} shards x {per_shard} images ({total / n / 1024:.0f} KB mean), "
        f"{settings.upload_concurrency} threads\n"
    )
    print("| what | images/s | vs raw tar read | vs raw read + S3 PUT |\n|---|---:|---:|---:|")
    for label, s in (
        ("the tars' bytes alone (no tar parsing; for scale)", bytes_s),
        ("raw tar read (tarfile, every member's bytes)", raw_s),
        ("capq shard reader (samples + metadata)", reader_s),
        ("raw read + plain S3 PUT, same threads", put_s),
        ("capq submit of the shards (read, validate, upload, record, enqueue)", submit_s),
    ):
        print(f"| {label} | {n / s:,.0f} | {raw_s / s:.3f} | {put_s / s:.2f} |")
    print()


def export_bench(settings: Settings, rows_n: int) -> None:
    """A job of rows_n images with a blip caption each, exported to Parquet; baseline: the same rows, already in
    memory, written by pyarrow alone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from producer.export import schema, write_parquet
    from producer.export_rows import PAGE, _item_pages, rows, select
    from storage.db import mongo
    from storage.jobs import JobStore

    job, _ = JobStore(settings).create("bench", "free", ["blip"], "default", job_id="export-bench")
    db, now = mongo(settings), datetime.now(UTC)
    for start in range(0, rows_n, 2_000):  # 10,000 at a time overran the 30 s socket timeout on a loaded server
        chunk = range(start, min(rows_n, start + 2_000))
        base = [
            {
                "job_id": job["_id"],
                "sha256": f"{i:064x}",
                "model": "blip",
                "preset": "default",
                "owner": "bench",
                "file_name": f"img-{i}.jpg",
                "meta": {"key": f"k{i}", "split": "train"},
            }
            for i in chunk
        ]
        db["job_items"].insert_many([d | {"seq": i, "created_at": now} for d, i in zip(base, chunk)], ordered=False)
        db["job_results"].insert_many(
            [
                d
                | {
                    "state": "done",
                    "caption": f"a photo of thing number {i}",
                    "checkpoint": "Salesforce/blip-image-captioning-base",
                    "updated_at": now,
                }
                for d, i in zip(base, chunk)
            ],
            ordered=False,
        )
    sel = select(settings, "bench", job="export-bench")
    out = Path(tempfile.mkdtemp(prefix="capq-export-bench-"))
    try:
        t0 = time.perf_counter()
        items_n = sum(map(len, _item_pages(settings, sel)))
        items_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        in_memory = list(rows(settings, sel))
        read_s = time.perf_counter() - t0
        assert items_n == len(in_memory) == rows_n
        t0 = time.perf_counter()
        pq.write_table(pa.Table.from_pylist(in_memory, schema(sel)), out / "baseline.parquet", compression="zstd")
        base_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert write_parquet(iter(in_memory), sel, out / "from-memory.parquet") == rows_n
        writer_s = time.perf_counter() - t0
        del in_memory
        t0 = time.perf_counter()
        assert write_parquet(rows(settings, sel), sel, out / "export.parquet") == rows_n
        export_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"## Parquet export of {rows_n:,} results\n")
    print("| what | rows/s |\n|---|---:|")
    print(f"| capq export --format parquet (MongoDB pages -> Parquet row groups) | {rows_n / export_s:,.0f} |")
    print(f"| pyarrow writing the same rows from memory | {rows_n / base_s:,.0f} |")
    print(
        f"| capq's Parquet writer (row groups of {PAGE:,}) fed the same rows from memory | {rows_n / writer_s:,.0f} |"
    )
    print(f"| the MongoDB read alone: items and results joined into rows | {rows_n / read_s:,.0f} |")
    print(f"| the items cursor alone (one collection, no join) | {rows_n / items_s:,.0f} |")
    print(
        f"\nexport / pyarrow from memory: {base_s / export_s:.3f} (goal >= 0.5); "
        f"capq's writer from memory / pyarrow: {base_s / writer_s:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--per-shard", type=int, default=250)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--skip", choices=("shards", "export"), default=None)
    args = parser.parse_args()

    with scratch(("main", "raw")) as (work, made):
        from producer.submit import celery_app

        celery_app(made["main"])
        if args.skip != "shards":
            shard_bench(made["main"], made["raw"], work, args.shards, args.per_shard)
        if args.skip != "export":
            export_bench(made["main"], args.rows)


if __name__ == "__main__":
    main()
