"""stream_bench: streaming submission of N sha256 references to stored images: producer RSS at N vs earlier, items/s."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

from bench.scratch import scratch


def rss_mib() -> float:
    """Resident set size of this process now (Linux /proc), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def sha(i: int) -> str:
    return hashlib.sha256(f"bench-image-{i}".encode()).hexdigest()


SEED_BATCH = 2_000


def seed_owned(settings, owner: str, n: int) -> None:
    """An earlier job of the owner's that holds the n images (what makes a sha256 reference acceptable)."""
    from storage.db import mongo

    items = mongo(settings)["job_items"]
    # 2,000 at a time: a loaded test-stack server took over the 30 s socket timeout for 10,000 past 400,000
    for start in range(0, n, SEED_BATCH):
        items.insert_many(
            [
                {
                    "job_id": "bench-earlier",
                    "sha256": sha(i),
                    "model": "blip",
                    "preset": "default",
                    "owner": owner,
                    "file_name": f"img-{i}.jpg",
                    "seq": i,
                }
                for i in range(start, min(n, start + SEED_BATCH))
            ],
            ordered=False,
        )
        if (start + SEED_BATCH) % 100_000 == 0:
            print(f"seeded {start + SEED_BATCH:,}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--mark", type=int, default=None, help="the earlier RSS sample (default items/10)")
    parser.add_argument("--every", type=int, default=100_000, help="print RSS and items/s every this many items")
    args = parser.parse_args()
    n, mark = args.items, args.mark or args.items // 10

    with scratch() as (work, made):
        settings = made["main"]
        tag = settings.mongo_db.rsplit("_", 1)[-1]
        from producer.submit import celery_app, submit

        celery_app(settings)
        t0 = time.perf_counter()
        seed_owned(settings, "bench", n)
        manifest = work / "refs.jsonl"
        with manifest.open("w") as f:
            for i in range(n):
                f.write(json.dumps({"sha256": sha(i), "meta": {"i": i}}) + "\n")
        print(
            f"set-up: {n:,} owned images and a {manifest.stat().st_size / 2**20:.0f} MiB manifest in "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )

        marks: dict[str, float] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage == "validating" and done in (mark, n):
                marks[f"rss_{done}"], marks[f"t_{done}"] = rss_mib(), time.perf_counter() - t1
            if stage == "validating" and done % args.every == 0:  # a run cut short still leaves its figures
                took = time.perf_counter() - t1
                print(f"{done:,} items: RSS {rss_mib():.0f} MiB, {took:.0f} s, {done / took:.0f} items/s", flush=True)

        rss_before = rss_mib()
        t1 = time.perf_counter()
        result = submit(settings, [manifest], "blip", owner="bench", job_id=f"stream-{tag}", progress=progress)
        took = time.perf_counter() - t1
        assert (result.accepted, result.enqueued, result.rejected_total) == (n, n, 0), result.as_dict()
        ratio = marks[f"rss_{n}"] / marks[f"rss_{mark}"]
        print(
            f"| items | producer RSS (MiB) | elapsed (s) | items/s so far |\n|---:|---:|---:|---:|\n"
            f"| 0 | {rss_before:.0f} | 0 | |\n"
            f"| {mark:,} | {marks[f'rss_{mark}']:.0f} | {marks[f't_{mark}']:.0f} | "
            f"{mark / marks[f't_{mark}']:.0f} |\n"
            f"| {n:,} | {marks[f'rss_{n}']:.0f} | {marks[f't_{n}']:.0f} | {n / marks[f't_{n}']:.0f} |"
        )
        print(
            f"\nwhole submission (read, check, record, enqueue): {took:.0f} s, {n / took:.0f} items/s; "
            f"RSS at {n:,} / RSS at {mark:,} = {ratio:.2f} (goal <= 1.20)"
        )


if __name__ == "__main__":
    main()
