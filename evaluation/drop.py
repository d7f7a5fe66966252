"""drop: whether a model's new evaluation dropped significantly from its trailing window, by the paired bootstrap of
evaluation.metrics on the images both scored."""
# Each evaluation keeps per-image statistics (reference scores: BLEU counts, ROUGE-L, CIDEr; CLIPScore; health
# flags) for up to drop_max_images images, the ones with the smallest sha256 so that successive runs keep the same
# images. A new evaluation is compared with the trailing window's: per image, the mean of its values in the earlier
# evaluations that scored it; then metrics.paired_bootstrap on the images in common (both resamples draw the same
# images, so image difficulty cancels out). With fewer than drop_min_images in common (production samples of new
# images) the per-image means are compared unpaired (clipscore.compare_unpaired); BLEU, a corpus score, is not.
from __future__ import annotations

from datetime import timedelta

import numpy as np

from capq.settings import Settings
from evaluation.metrics import CorpusStats, paired_bootstrap

# Scores where a rise is the degradation (everything else: a fall is).
LOWER_IS_BETTER = frozenset({"empty_share", "repeated_share", "length_limit_share"})
# Scores not tested: METEOR has no per-image statistics; vocabulary is a corpus count, not a mean over images;
# longer or shorter captions are neither better nor worse.
UNTESTED = frozenset({"meteor", "vocabulary", "mean_words"})


def keep_ids(ids, limit: int) -> list:
    """The images whose statistics an evaluation keeps: the `limit` smallest ids (stable as the image set grows)."""
    return sorted(ids)[:limit]


def reference_per_image(stats: CorpusStats, limit: int) -> dict:
    """The per-image statistics of a reference evaluation, as stored in its document."""
    index = {i: n for n, i in enumerate(stats.image_ids)}
    rows = [index[i] for i in keep_ids(stats.image_ids, limit)]
    return {"ids": [stats.image_ids[r] for r in rows], "bleu": stats.bleu[rows].tolist(),
            **{name: v[rows].tolist() for name, v in stats.per_image.items()}}


def doc_stats(doc: dict) -> CorpusStats | None:
    """The per-image statistics an evaluation document keeps, as CorpusStats (None for an older document)."""
    if doc.get("kind") == "clipscore" and isinstance(doc.get("per_image"), dict) and doc["per_image"]:
        ids = sorted(doc["per_image"])
        return CorpusStats(tuple(ids), np.zeros((len(ids), 0)),
                           {"clipscore": np.array([doc["per_image"][i] for i in ids], dtype=float)})
    per = doc.get("per_image_stats")
    if not per or not per.get("ids"):
        return None
    n = len(per["ids"])
    bleu = np.asarray(per.get("bleu") or np.zeros((n, 0)), dtype=float).reshape(n, -1)
    return CorpusStats(tuple(per["ids"]), bleu, {k: np.asarray(v, dtype=float) for k, v in per.items()
                                                  if k not in ("ids", "bleu")})


def trailing_stats(docs: list[dict]) -> CorpusStats | None:
    """Per image, the mean of its statistics over the earlier evaluations that scored it."""
    sums: dict = {}
    for stats in filter(None, map(doc_stats, docs)):
        for n, i in enumerate(stats.image_ids):
            row = (stats.bleu[n], {k: v[n] for k, v in stats.per_image.items()})
            acc = sums.setdefault(i, [np.zeros_like(row[0]), {}, 0])
            if acc[0].shape == row[0].shape:
                acc[0] = acc[0] + row[0]
            for k, v in row[1].items():
                acc[1][k] = acc[1].get(k, 0.0) + v
            acc[2] += 1
    if not sums:
        return None
    ids = sorted(sums)
    names = set.intersection(*(set(sums[i][1]) for i in ids))
    bleu = np.array([sums[i][0] / sums[i][2] for i in ids], dtype=float).reshape(len(ids), -1)
    return CorpusStats(tuple(ids), bleu, {k: np.array([sums[i][1][k] / sums[i][2] for i in ids]) for k in names})


def is_drop(name: str, diff: float, ci95: list[float], p_value: float, level: float) -> bool:
    """The new score is worse and its whole 95% interval of new minus trailing lies on the worse side of 0."""
    worse = ci95[0] > 0 if name in LOWER_IS_BETTER else ci95[1] < 0
    return bool(worse and p_value < level and diff != 0)


def compare_to_trailing(new: CorpusStats, old: CorpusStats, settings: Settings, seed: int = 0) -> dict:
    """{"method", "images", "scores": {score: {diff, ci95, p_value, significant}}} of new minus old."""
    from evaluation.clipscore import compare_unpaired

    old_ids = set(old.image_ids)
    common = [i for i in new.image_ids if i in old_ids]
    names = [k for k in new.per_image if k in old.per_image and k not in UNTESTED]
    if len(common) >= settings.drop_min_images:
        bleu = new.bleu.shape[1] == old.bleu.shape[1] > 0
        a, b = new.take(common, names, bleu), old.take(common, names, bleu)
        tested = paired_bootstrap(a, b, settings.bootstrap_samples, seed)
        method, images = "paired", len(common)
    else:
        tested = {k: compare_unpaired(new.per_image[k], old.per_image[k], settings.bootstrap_samples, seed)
                  for k in names}
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
