"""heal_cost_bench: the no-op plumbing bench with healing on and off, alternated in one run (goal: within 5 %).

Run: `python -m bench.heal_cost_bench [--images 1000] [--rounds 3]` with the local stack up. Each round starts a
no-op worker (bench.noop_worker) with CAPQ_HEALING=true and one with CAPQ_HEALING=false, one after the other
(the order swaps every round, so neither always runs on a warmer machine), and times a job of new images through
each. Healing on adds, per shard, a Redis write on receipt, a read of the images' deaths and a release; per
batch, a Redis write naming the batch; and, every CAPQ_HEAL_INTERVAL_S, the elected worker's healing round.
Prints markdown rows for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics

from bench.worker_bench import bench_settings, drop, run_job, start_worker
from tooling import procs
from tooling.images import random_images

GOAL = 0.05


def one_run(healing: bool, images: list[tuple[str, bytes]], redis_db: int) -> float:
    """Images/s of a fresh no-op worker, healing on or off, over `images` (a warm-up job first)."""
    s, env = bench_settings(8, redis_db)
    env["CAPQ_HEALING"] = str(healing).lower()
    proc = start_worker(env, ["-m", "bench.noop_worker"], "blip")
    try:
        run_job(s, random_images(16, seed=hash(images[0][1]) % 1000, size=64), "blip")  # warm-up
        wall, _ = run_job(s, images, "blip")
    finally:
        procs.stop(proc, timeout_s=60)
        drop(s)
    return len(images) / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1000, help="images per timed job")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of on + off (the median of each is compared)")
    parser.add_argument("--redis-db", type=int, default=14, help="Redis database the bench may flush")
    args = parser.parse_args()
    rates: dict[bool, list[float]] = {True: [], False: []}
    print("| round | healing on, images/s | healing off, images/s | on / off |")
    print("| --- | --- | --- | --- |")
    for r in range(args.rounds):
        for healing in (True, False) if r % 2 == 0 else (False, True):
            # New images every job: a caption already stored would be reused without a fetch.
            images = random_images(args.images, seed=1000 * (r + 1) + healing, size=64)
            rates[healing].append(one_run(healing, images, args.redis_db))
        print(
            f"| {r + 1} | {rates[True][-1]:.0f} | {rates[False][-1]:.0f} | {rates[True][-1] / rates[False][-1]:.3f} |",
            flush=True,
        )
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    print(
        f"\nmedian of {args.rounds}: healing on {on:.0f} images/s, off {off:.0f} images/s: on / off {on / off:.3f} "
        f"(goal >= {1 - GOAL:.2f})"
    )


if __name__ == "__main__":
    main()
