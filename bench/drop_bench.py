"""drop_bench: the scheduled evaluation of a new checkpoint with its drop test (paired bootstrap against the trailing
window's evaluations on the same images) against the same evaluation without it."""

from __future__ import annotations

import argparse
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

from bench.eval_bench import corpus, store, timed
from capq.settings import load_settings
from evaluation.drop import drop_test
from evaluation.java import ptb_tokenize
from evaluation.run import _evaluate_group
from storage.caption_reads import CaptionReads
from storage.db import Mongo, mongo
from storage.evaluations import EvaluationStore


def trailing_docs(settings, group: dict, count: int) -> None:
    """`count` earlier evaluations of the model, one per hour, each with its per-image statistics (the window the
    drop test reads)."""
    doc = _evaluate_group(settings, group, {}, "beat", False)
    now = datetime.now(UTC)
    docs = [{**doc, "checkpoint": "old", "created_at": now - timedelta(hours=h + 1)} for h in range(count)]
    mongo(settings)["evaluations"].insert_many(docs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--refs", type=int, default=5)
    parser.add_argument(
        "--trailing",
        type=int,
        nargs="+",
        default=[1, 10, 50],
        help="earlier evaluations in the window (the test reads at most 50)",
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs of each; the fastest counts (shared machines are noisy)"
    )
    args = parser.parse_args(argv)
    settings = load_settings({**os.environ, "CAPQ_MONGO_DB": f"capq_bench_{uuid.uuid4().hex[:10]}"})
    cands, refs = corpus(args.images, args.refs, 0)
    handle = Mongo(settings)
    try:
        handle.ensure_indexes()
        store(settings, cands, refs)
        ptb_tokenize(["warm the JVM and the jar in the page cache"])
        [group] = CaptionReads(settings).groups(model="blip")
        evaluations = EvaluationStore(settings)
        print(
            f"| images | per-image stats kept | trailing evaluations | evaluation without drop test s | "
            f"with it ({settings.bootstrap_samples} paired resamples) s | drop test alone s | ratio |"
        )
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for count in args.trailing:
            mongo(settings)["evaluations"].delete_many({})
            trailing_docs(settings, group, count)
            base, ours, test_only = [], [], []

            def without() -> None:
                doc = _evaluate_group(settings, group, {}, "beat", False)
                doc.pop("per_image_stats")
                evaluations.insert({**doc, "checkpoint": "bench-base", "kind": "bench"})

            def with_test(test_only: list[float] = test_only) -> None:
                doc = _evaluate_group(settings, group, {}, "beat", False)
                started = time.perf_counter()
                doc["drop"] = drop_test(settings, evaluations, doc)
                test_only.append(time.perf_counter() - started)
                assert doc["drop"] and doc["drop"]["images"] == min(args.images, settings.drop_max_images)
                evaluations.insert({**doc, "kind": "bench"})

            for _ in range(args.repeat):
                base.append(timed(without)[0])
                ours.append(timed(with_test)[0])
            b, o = min(base), min(ours)
            print(
                f"| {args.images} | {min(args.images, settings.drop_max_images)} | {count} | {b:.2f} | {o:.2f} | "
                f"{min(test_only):.2f} | {o / b:.2f} |"
            )
    finally:
        handle.client.drop_database(settings.mongo_db)


if __name__ == "__main__":
    main()
