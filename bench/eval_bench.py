"""eval_bench: run_evaluation (MongoDB reads + metrics + bootstrap) against bare pycocoevalcap on the same corpus."""

from __future__ import annotations

import argparse
import os
import random
import time
import uuid

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from capq.settings import load_settings
from evaluation.java import ptb_tokenize
from evaluation.run import run_evaluation
from storage.captions import CaptionStore
from storage.db import Mongo
from storage.images import ImageRecords
from storage.references import ReferenceStore

GOAL = 1.3


def corpus(images: int, refs_per_image: int, seed: int) -> tuple[dict[str, str], dict[str, list[str]]]:
    """({sha256: candidate}, {sha256: refs}): random words from a fixed vocabulary, COCO-like lengths."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(1000)] + ["a", "the", "on", "of", "with", "in"]

    def sentence() -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(8, 14))) + rng.choice([".", "", " ."])

    shas = [f"{rng.getrandbits(256):064x}" for _ in range(images)]
    return {s: sentence() for s in shas}, {s: [sentence() for _ in range(refs_per_image)] for s in shas}


def store(settings, cands: dict[str, str], refs: dict[str, list[str]]) -> None:
    ImageRecords(settings).record_many(
        [
            {"sha256": s, "size": 1, "format": "JPEG", "width": 1, "height": 1, "file_name": f"{s[:16]}.jpg"}
            for s in cands
        ]
    )
    ReferenceStore(settings).write(
        [
            {"sha256": s, "file_name": f"{s[:16]}.jpg", "captions": r, "source": "bench", "imported_at": None}
            for s, r in refs.items()
        ]
    )
    captions = CaptionStore(settings)
    docs = [
        {
            "sha256": s,
            "model": "blip",
            "checkpoint": "bench",
            "preset": "default",
            "config_hash": "bench",
            "caption": c,
            "job_id": "bench",
            "worker_id": "bench",
            "error": None,
        }
        for s, c in cands.items()
    ]
    for start in range(0, len(docs), 1000):
        captions.insert_new(docs[start : start + 1000])


def pycocoevalcap_alone(cands: dict[str, str], refs: dict[str, list[str]]) -> dict[str, float]:
    """What a script would do: PTBTokenizer on references and candidates, then Bleu(4) and Cider()."""
    tok = PTBTokenizer()
    gts = tok.tokenize({s: [{"caption": c} for c in r] for s, r in refs.items()})
    res = tok.tokenize({s: [{"caption": c}] for s, c in cands.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {**{f"bleu_{k + 1}": b for k, b in enumerate(bleu)}, "cider": cider}


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--refs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs of each; the fastest counts (shared machines are noisy)"
    )
    args = parser.parse_args(argv)
    settings = load_settings({**os.environ, "CAPQ_MONGO_DB": f"capq_bench_{uuid.uuid4().hex[:10]}"})
    cands, refs = corpus(args.images, args.refs, args.seed)
    mongo = Mongo(settings)
    try:
        mongo.ensure_indexes()
        store(settings, cands, refs)
        ptb_tokenize(["warm the JVM and the jar in the page cache"])
        base_times, ours_times = [], []
        for _ in range(args.repeat):
            t, base = timed(lambda: pycocoevalcap_alone(cands, refs))
            base_times.append(t)
            t, docs = timed(lambda: run_evaluation(settings, model="blip"))
            ours_times.append(t)
        ours = docs[0]["scores"]
        for name, value in base.items():
            assert abs(ours[name] - value) < 1e-9, f"{name}: run_evaluation {ours[name]} != pycocoevalcap {value}"
        base_s, ours_s = min(base_times), min(ours_times)
        print(
            "| images | refs/image | pycocoevalcap alone (PTB+Bleu(4)+Cider) s | run_evaluation "
            f"(Mongo + BLEU/ROUGE-L/CIDEr + {settings.bootstrap_samples} bootstrap) s | ratio | goal |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        print(f"| {args.images} | {args.refs} | {base_s:.2f} | {ours_s:.2f} | {ours_s / base_s:.2f} | <= {GOAL} |")
    finally:
        mongo.client.drop_database(settings.mongo_db)


if __name__ == "__main__":
    main()
