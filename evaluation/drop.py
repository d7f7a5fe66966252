"""drop: whether a model's new evaluation dropped significantly from its trailing window, by the paired bootstrap of
evaluation.metrics on the images both scored."""

# Each evaluation keeps per-image statistics (reference scores: BLEU counts, ROUGE-L, CIDEr; CLIPScore; health
# flags) for up to drop_max_images images, the ones with the smallest sha256 so that successive runs keep the same
# images. A new evaluation is compared with the trailing window's: per image, the mean of its values in the earlier
# evaluations that scored it; then metrics.paired_bootstrap on the images in common (both resamples draw the same
# images, so image difficulty cancels out). With fewer than drop_min_images in common (production samples of new
# images) the per-image means are compared unpaired (metrics.compare_unpaired); BLEU, a corpus score, is not.
from __future__ import annotations

from datetime import timedelta

import numpy as np

from capq.settings import Settings
from evaluation.metrics import CorpusStats, compare_unpaired, paired_bootstrap

# Scores where a rise is the degradation (everything else: a fall is).
LOWER_IS_BETTER = frozenset({"empty_share", "repeated_share", "length_limit_share"})
# Scores not tested: METEOR has no per-image statistics; vocabulary is a corpus count, not a mean over images;
# longer or shorter captions are neither better nor worse.
UNTESTED = frozenset({"meteor", "vocabulary", "mean_words"})


def keep_ids(ids, limit: int) -> list:
    """The images whose statistics an evaluation keeps: the `limit` smallest ids (stable as the image set grows)."""
    return sorted(ids)[:limit]


def pack(ids: list, bleu: np.ndarray | None, per_image: dict[str, np.ndarray]) -> dict:
    """Per-image statistics as stored in an evaluation document: the ids, then each array as little-endian float64
    bytes (BSON binary: a tenth of the size of a list of numbers, and decoded without a Python object per value)."""
    out = {"ids": list(ids)}
    if bleu is not None and bleu.shape[1]:
        out["bleu"] = np.ascontiguousarray(bleu, dtype="<f8").tobytes()
    out.update({k: np.ascontiguousarray(v, dtype="<f8").tobytes() for k, v in per_image.items()})
    return out


def reference_per_image(stats: CorpusStats, limit: int) -> dict:
    """The per-image statistics of a reference evaluation, as stored in its document."""
    kept = stats.take(keep_ids(stats.image_ids, limit))
    return pack(list(kept.image_ids), kept.bleu, kept.per_image)


def _array(value, n: int) -> np.ndarray:
    if isinstance(value, (bytes, bytearray)):
        return np.frombuffer(value, dtype="<f8").reshape(n, -1).astype(float)
    return np.asarray(value, dtype=float).reshape(n, -1)


def doc_stats(doc: dict) -> CorpusStats | None:
    """The per-image statistics an evaluation document keeps, as CorpusStats (None for an older document)."""
    if doc.get("kind") == "clipscore" and isinstance(doc.get("per_image"), dict) and doc["per_image"]:
        ids = sorted(doc["per_image"])
        return CorpusStats(
            tuple(ids),
            np.zeros((len(ids), 0)),
            {"clipscore": np.array([doc["per_image"][i] for i in ids], dtype=float)},
        )
    per = doc.get("per_image_stats")
    if not per or not per.get("ids"):
        return None
    n = len(per["ids"])
    bleu = _array(per["bleu"], n) if "bleu" in per else np.zeros((n, 0))
    return CorpusStats(
        tuple(per["ids"]), bleu, {k: _array(v, n)[:, 0] for k, v in per.items() if k not in ("ids", "bleu")}
    )


def trailing_stats(docs: list[dict]) -> CorpusStats | None:
    """Per image, the mean of its statistics over the earlier evaluations that scored it."""
    all_stats = [st for st in map(doc_stats, docs) if st is not None]
    if not all_stats:
        return None
    ids = np.array(sorted({i for st in all_stats for i in st.image_ids}))
    names = sorted(set.intersection(*(set(st.per_image) for st in all_stats)))
    widths = {st.bleu.shape[1] for st in all_stats}
    width = widths.pop() if len(widths) == 1 else 0  # BLEU only when every evaluation kept it
    count = np.zeros(len(ids))
    bleu = np.zeros((len(ids), width))
    sums = {k: np.zeros(len(ids)) for k in names}
    for st in all_stats:
        rows = np.searchsorted(ids, np.array(st.image_ids))
        np.add.at(count, rows, 1)
        if width:
            np.add.at(bleu, rows, st.bleu)
        for k in names:
            np.add.at(sums[k], rows, st.per_image[k])
    return CorpusStats(tuple(ids.tolist()), bleu / count[:, None], {k: v / count for k, v in sums.items()})


def is_drop(name: str, diff: float, ci95: list[float], p_value: float, level: float) -> bool:
    """The new score is worse and its whole 95% interval of new minus trailing lies on the worse side of 0."""
    worse = ci95[0] > 0 if name in LOWER_IS_BETTER else ci95[1] < 0
    return bool(worse and p_value < level and diff != 0)


def compare_to_trailing(new: CorpusStats, old: CorpusStats, settings: Settings, seed: int = 0) -> dict:
    """{"method", "images", "scores": {score: {diff, ci95, p_value, significant}}} of new minus old."""
    old_ids = set(old.image_ids)
    common = [i for i in new.image_ids if i in old_ids]
    names = [k for k in new.per_image if k in old.per_image and k not in UNTESTED]
    if len(common) >= settings.drop_min_images:
        bleu = new.bleu.shape[1] == old.bleu.shape[1] > 0
        a, b = new.take(common, names, bleu), old.take(common, names, bleu)
        tested = paired_bootstrap(a, b, settings.bootstrap_samples, seed)
        method, images = "paired", len(common)
    else:
        tested = {
            k: compare_unpaired(new.per_image[k], old.per_image[k], settings.bootstrap_samples, seed) for k in names
        }
        method, images = "unpaired", min(len(new.image_ids), len(old.image_ids))
    scores = {}
    for name, t in tested.items():
        scores[name] = {**t, "significant": is_drop(name, t["diff"], t["ci95"], t["p_value"], settings.drop_p_value)}
    return {"method": method, "images": images, "scores": scores}


def drop_test(settings: Settings, store, doc: dict) -> dict | None:
    """The drop test of `doc` (about to be stored) against the same model's and kind's whole-history evaluations of
    the trailing drop_window_s; None when it keeps no per-image statistics or nothing trails it."""
    new = doc_stats(doc)
    if new is None:
        return None
    since = doc["created_at"] - timedelta(seconds=settings.drop_window_s)
    docs = store.trailing(doc["model"], doc.get("kind"), since, doc["created_at"])
    old = trailing_stats(docs)
    if old is None:
        return None
    return {"window_s": settings.drop_window_s, "trailing": len(docs), **compare_to_trailing(new, old, settings)}
