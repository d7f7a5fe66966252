"""quality: reference-free quality of each model's newest production captions (health signals and CLIPScore), stored
in the evaluation history beside BLEU/CIDEr, and the comparison of an alias's arms."""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from datetime import UTC, datetime

import numpy as np

from capq.imaging import InvalidImage, decode_rgb
from capq.names import MODEL_NAMES
from capq.presets import get_preset
from capq.settings import Settings
from evaluation import metrics
from evaluation.drop import UNTESTED, doc_stats, drop_test, pack
from evaluation.health import health_signals, hits_limit, length_limit
from evaluation.metrics import unpaired_bootstrap
from evaluation.run import _references, image_set_hash
from storage.aliases import AliasStore
from storage.blobs import ImageStore
from storage.caption_samples import CaptionSamples
from storage.errors import NotFound
from storage.evaluations import EvaluationStore

log = logging.getLogger("capq.eval")


@functools.lru_cache(maxsize=16)
def _token_counter(checkpoint: str):
    """Count tokens with the checkpoint's own tokenizer when it loads offline; else count words (an undercount,
    recorded as length_unit "words")."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
        return (lambda text: len(tok(text, add_special_tokens=False)["input_ids"])), "tokens"
    except Exception:  # noqa: BLE001 - any load failure falls back to words
        return (lambda text: len(text.split())), "words"


def _sample_fields(sample: list[dict]) -> dict:
    shas = [c["sha256"] for c in sample]
    return {
        "image_count": len(sample),
        "image_set_hash": image_set_hash(shas),
        "checkpoints": sorted({c["checkpoint"] for c in sample if c.get("checkpoint")}),
        "preset": ", ".join(sorted({c.get("preset") or "" for c in sample} - {""})) or None,
        "sample": {"newest_at": sample[0].get("created_at"), "oldest_at": sample[-1].get("created_at")},
        "scope": {"job_id": None, "since": None, "preset": None},
    }


def health_doc(model: str, sample: list[dict], trigger: str) -> dict:
    units, flags = set(), []
    for c in sample:
        count, unit = _token_counter(c.get("checkpoint") or "")
        units.add(unit)
        try:
            limit = length_limit(get_preset(model, c.get("preset") or "default")["generate"])
        except ValueError:
            limit = None
        flags.append(hits_limit(count(c.get("caption") or ""), limit))
    scores = health_signals([c.get("caption") or "" for c in sample], flags)
    return {
        "kind": "health",
        "model": model,
        **_sample_fields(sample),
        "scores": scores,
        "ci95": {},
        "per_image_stats": health_per_image(sample, flags),
        "counts": {
            "captions": len(sample),
            "scored": len(sample),
            "no_reference": 0,
            "empty": round(scores["empty_share"] * len(sample)),
        },
        "length_unit": "tokens" if units == {"tokens"} else "words",
        "trigger": trigger,
    }


def health_per_image(sample: list[dict], at_limit: list[bool], limit: int = 100_000) -> dict:
    """Per image (its newest caption in the sample), the health flags whose means are the shares, and its words:
    what the drop test (evaluation.drop) pairs by image."""
    texts = [(c.get("caption") or "").strip() for c in sample]
    counts = Counter(t.lower() for t in texts if t)
    first: dict[str, int] = {}
    for n, c in enumerate(sample):
        first.setdefault(c["sha256"], n)
    ids = sorted(first)[:limit]
    rows = [first[i] for i in ids]
    return pack(
        ids,
        None,
        {
            "empty_share": np.array([float(not texts[n]) for n in rows]),
            "repeated_share": np.array([float(bool(texts[n]) and counts[texts[n].lower()] > 1) for n in rows]),
            "length_limit_share": np.array([float(bool(texts[n]) and at_limit[n]) for n in rows]),
            "mean_words": np.array([float(len(texts[n].split())) for n in rows]),
        },
    )


def clip_doc(settings: Settings, model: str, sample: list[dict], trigger: str) -> dict | None:
    """CLIPScore of up to clipscore_sample_size (image, caption) pairs with a 95% bootstrap interval; None when no
    image of the sample can be read."""
    from evaluation.clipscore import clip_scores, mean_ci95

    store, images, kept = ImageStore(settings), [], []
    for c in sample[: settings.clipscore_sample_size]:
        try:
            images.append(decode_rgb(store.get(c["sha256"]), settings.max_image_pixels))
            kept.append(c)
        except (NotFound, InvalidImage) as exc:
            log.info("clipscore skips %s: %s", c["sha256"][:12], exc)
    if not kept:
        return None
    scores = clip_scores(settings.clip_checkpoint, images, [c.get("caption") or "" for c in kept])
    mean, ci = mean_ci95(scores, settings.bootstrap_samples)
    return {
        "kind": "clipscore",
        "model": model,
        **_sample_fields(kept),
        "scores": {"clipscore": mean},
        "ci95": {"clipscore": list(ci)},
        "per_image": {c["sha256"]: s for c, s in zip(kept, scores)},
        "clip_checkpoint": settings.clip_checkpoint,
        "bootstrap_samples": settings.bootstrap_samples,
        "counts": {
            "captions": len(kept),
            "scored": len(kept),
            "no_reference": 0,
            "empty": sum(1 for c in kept if not (c.get("caption") or "").strip()),
        },
        "trigger": trigger,
    }


def measure_quality(
    settings: Settings, model: str | None = None, trigger: str = "manual", clip: bool = True
) -> list[dict]:
    """Store a health evaluation (and a CLIPScore one when CAPQ_CLIP_CHECKPOINT is set and clip is True) of each
    model's newest CAPQ_QUALITY_SAMPLE_SIZE captions; returns the stored documents. Models with no captions are
    skipped."""
    store, stored = EvaluationStore(settings), []
    for name in [model] if model else MODEL_NAMES:
        started = time.perf_counter()
        sample = CaptionSamples(settings).newest(name, settings.quality_sample_size)
        if not sample:
            continue
        docs = [health_doc(name, sample, trigger)]
        if clip and settings.clip_checkpoint:
            docs.append(clip_doc(settings, name, sample, trigger))
        for doc in filter(None, docs):
            doc["created_at"] = datetime.now(UTC)
            doc["drop"] = drop_test(settings, store, doc)  # issue 18: against its trailing window, by image
            doc["duration_s"] = round(time.perf_counter() - started, 3)
            stored.append({k: v for k, v in store.insert(doc).items() if k != "per_image_stats"})
    return stored


def _reference_stats(settings: Settings, samples: dict[str, list[dict]]):
    """({arm: CorpusStats} of the arms' captions that have references, one CIDEr IDF for all arms) or {}."""
    newest = {arm: {c["sha256"]: [c.get("caption") or ""] for c in reversed(sample)} for arm, sample in samples.items()}
    refs = _references(settings, sorted({sha for cands in newest.values() for sha in cands}))
    scored = {arm: {sha: c for sha, c in cands.items() if sha in refs} for arm, cands in newest.items()}
    scored = {arm: cands for arm, cands in scored.items() if cands}
    if not scored:
        return {}
    # Keyed (arm, sha): an image that two arms captioned stays two candidates of one corpus (one IDF).
    union = {(arm, sha): c for arm, cands in scored.items() for sha, c in cands.items()}
    cands, tok_refs = metrics.tokenize(union, {key: refs[key[1]] for key in union})
    stats = metrics.corpus_stats(cands, tok_refs)
    return {arm: stats.take([(arm, sha) for sha in cands_]) for arm, cands_ in scored.items()}


def compare_alias_arms(settings: Settings, alias: str, clip: bool = True, store: bool = False) -> dict:
    """Each arm of `alias` measured on the captions of the jobs submitted to it: health signals, CLIPScore (with a
    CLIP checkpoint) and BLEU/CIDEr on the captions that have references; for each pair of arms and each score the
    difference, its 95% interval, a p-value and whether it is significant (unpaired bootstrap: the alias sends each
    image to one arm, so the arms caption different images). With store=True the comparison is kept in the
    evaluation history (kind "alias"), where the exporter reads it."""
    arms = AliasStore(settings).get_many([alias]).get(alias)
    if arms is None:
        raise ValueError(f"no alias {alias!r}; `capq aliases list` shows them")
    reads = CaptionSamples(settings)
    jobs = reads.alias_jobs(alias)
    out: dict = {
        "alias": alias,
        "arms": arms,
        "jobs": len(jobs),
        "per_arm": {},
        "diff": {},
        "method": "unpaired bootstrap",
        "bootstrap_samples": settings.bootstrap_samples,
        "p_value_level": settings.drop_p_value,
    }
    stats: dict[str, dict] = {}  # kind -> arm -> CorpusStats
    samples = {}
    for arm in arms:
        sample = reads.newest(arm["model"], settings.quality_sample_size, job_ids=jobs)
        if not sample:
            out["per_arm"][arm["model"]] = {"captions": 0}
            continue
        samples[arm["model"]] = sample
        health = health_doc(arm["model"], sample, "manual")
        entry = {"captions": len(sample), "health": health["scores"]}
        stats.setdefault("health", {})[arm["model"]] = doc_stats(health)
        if clip and settings.clip_checkpoint:
            doc = clip_doc(settings, arm["model"], sample, "manual")
            if doc:
                entry["clipscore"] = {
                    "mean": doc["scores"]["clipscore"],
                    "ci95": doc["ci95"]["clipscore"],
                    "images": doc["image_count"],
                }
                stats.setdefault("clipscore", {})[arm["model"]] = doc_stats(doc)
        out["per_arm"][arm["model"]] = entry
    for model, ref_stats in _reference_stats(settings, samples).items():
        out["per_arm"][model]["references"] = {"images": len(ref_stats.image_ids), "scores": ref_stats.scores()}
        stats.setdefault("references", {})[model] = ref_stats
    for kind, by_arm in stats.items():
        names = list(by_arm)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                tested = unpaired_bootstrap(by_arm[a], by_arm[b], settings.bootstrap_samples)
                out["diff"].setdefault(f"{a} - {b}", {})[kind] = {
                    name: t | {"significant": bool(t["p_value"] < settings.drop_p_value and t["diff"] != 0)}
                    for name, t in tested.items()
                    if name not in UNTESTED
                }
    if store:
        out = EvaluationStore(settings).insert({**out, "kind": "alias", "model": None, "created_at": datetime.now(UTC)})
    return out
