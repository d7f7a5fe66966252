"""run: score stored captions against their references, one evaluation document per (model, checkpoint, config)."""

# Only captions with status "done" count. A caption whose image has no references is left out and counted
# (counts.no_reference). An empty caption stays in as an empty candidate and scores 0 on every metric
# (counts.empty): leaving it out would reward a model for producing nothing.
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from capq.settings import Settings
from evaluation import metrics
from evaluation.drop import drop_test, reference_per_image
from evaluation.errors import CompareError
from evaluation.references import resolve_pending
from storage.caption_reads import CaptionReads
from storage.evaluations import EvaluationStore
from storage.references import ReferenceStore

TRIGGERS = ("manual", "beat")


@dataclass
class RunReport:
    evaluations: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {model, checkpoint, config_hash, reason}


def image_set_hash(shas) -> str:
    """Names the scored image set: CIDEr (its IDF) is comparable only between runs with the same hash."""
    return hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()


def _unchanged(group: dict, latest: dict | None, last_import: datetime | None) -> bool:
    if latest is None or latest["counts"]["captions"] != group["captions"]:
        return False
    if group["last_caption_at"] and (
        not latest.get("last_caption_at") or group["last_caption_at"] > latest["last_caption_at"]
    ):
        return False
    return last_import is None or last_import <= latest["created_at"]


def _references(settings: Settings, shas: list[str]) -> dict[str, list[str]]:
    refs = ReferenceStore(settings)
    found = refs.captions_for(shas)
    missing = [s for s in shas if s not in found]
    if missing and resolve_pending(settings, missing):
        found.update(refs.captions_for(missing))
    return found


def _evaluate_group(settings: Settings, group: dict, filters: dict, trigger: str, meteor: bool) -> dict | str:
    """The evaluation document of one group, or the reason it cannot be scored."""
    started = time.perf_counter()
    key = {k: group[k] for k in ("model", "checkpoint", "config_hash")}
    captions = CaptionReads(settings).captions(**key, **filters)
    refs = _references(settings, list(dict.fromkeys(c["sha256"] for c in captions)))
    scored = {c["sha256"]: [c.get("caption") or ""] for c in captions if c["sha256"] in refs}
    if not scored:
        return (
            f"none of its {len(captions)} caption(s) has references; "
            "import them with `capq refs import FILE` (COCO captions or captions_ground_truth.json)"
        )
    result = metrics.evaluate(
        scored, {s: refs[s] for s in scored}, meteor=meteor, samples=settings.bootstrap_samples, seed=0
    )
    return {
        **key,
        "preset": ", ".join(group["presets"]) or None,
        "image_count": len(scored),
        "image_set_hash": image_set_hash(scored),
        "scores": result.scores,
        "ci95": {name: list(ci) for name, ci in result.ci95.items()},
        "counts": {
            "captions": len(captions),
            "scored": len(scored),
            "no_reference": len(captions) - len(scored),
            "empty": sum(1 for c in scored.values() if not c[0].strip()),
        },
        "scope": {"job_id": filters.get("job_id"), "since": filters.get("since"), "preset": filters.get("preset")},
        "trigger": trigger,
        "last_caption_at": group["last_caption_at"],
        "bootstrap_samples": settings.bootstrap_samples,
        "cider_idf": "references of the scored image set",
        "per_image_stats": reference_per_image(result.stats, settings.drop_max_images),  # issue 18: drop tests
        "created_at": datetime.now(UTC),
        "duration_s": round(time.perf_counter() - started, 3),
    }


def evaluate_groups(
    settings: Settings,
    model: str | None = None,
    preset: str | None = None,
    job_id: str | None = None,
    since: datetime | None = None,
    trigger: str = "manual",
    skip_if_unchanged: bool = False,
    meteor: bool = False,
) -> RunReport:
    """run_evaluation, also saying which groups were skipped and why."""
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # stored times are UTC
    filters = {k: v for k, v in (("preset", preset), ("job_id", job_id), ("since", since)) if v}
    store, report = EvaluationStore(settings), RunReport()
    last_import = ReferenceStore(settings).last_import_at() if skip_if_unchanged else None
    # The group that captioned last is evaluated last: it is its model's newest evaluation, the one exported and
    # tested for a drop against the trailing window (a new checkpoint against the one it replaces).
    groups = sorted(
        CaptionReads(settings).groups(model=model, **filters),
        key=lambda g: (g["last_caption_at"] is not None, g["last_caption_at"] or 0),
    )
    for group in groups:
        key = {k: group[k] for k in ("model", "checkpoint", "config_hash")}
        if skip_if_unchanged and not (job_id or since) and _unchanged(group, store.latest(**key), last_import):
            report.skipped.append({**key, "reason": "no caption or reference newer than its last evaluation"})
            continue
        outcome = _evaluate_group(settings, group, filters, trigger, meteor)
        if isinstance(outcome, str):
            report.skipped.append({**key, "reason": outcome, "captions": group["captions"]})
        else:
            if not (job_id or since):  # a whole-history evaluation: tested against its trailing window
                outcome["drop"] = drop_test(settings, store, outcome)
            report.evaluations.append(without_per_image(store.insert(outcome)))
    return report


def run_evaluation(
    settings: Settings,
    model: str | None = None,
    preset: str | None = None,
    job_id: str | None = None,
    since: datetime | None = None,
    trigger: str = "manual",
    skip_if_unchanged: bool = False,
    meteor: bool = False,
) -> list[dict]:
    """Evaluate finished captions per (model, checkpoint, config_hash) group and store one document each.

    :param model, preset, job_id: narrow the captions (job_id: captions made by that job).
    :param since: only captions created at or after this time (naive times are taken as UTC).
    :param trigger: "manual" or "beat", recorded in each document.
    :param skip_if_unchanged: skip a group with no caption and no reference import newer than its last
        full evaluation (the scheduler's mode; ignored when job_id or since narrows the run).
    :param meteor: also compute METEOR (Java, slow to start).
    :returns: the stored evaluation documents, each with its "id".
    """
    return evaluate_groups(settings, model, preset, job_id, since, trigger, skip_if_unchanged, meteor).evaluations


def without_per_image(doc: dict) -> dict:
    """An evaluation without its per-image statistics (kept in MongoDB for drop tests, too long to print)."""
    return {k: v for k, v in doc.items() if k not in ("per_image", "per_image_stats")}


def _latest_group(settings: Settings, model: str, preset: str | None) -> dict:
    groups = CaptionReads(settings).groups(model=model, preset=preset)
    if not groups:
        where = f" with preset {preset!r}" if preset else ""
        raise CompareError(
            f"no finished captions for model {model!r}{where}; check the name (capq eval history lists them)"
        )
    # Several checkpoints or configs: the one captioned most recently stands for the model.
    return max(groups, key=lambda g: (g["last_caption_at"] is not None, g["last_caption_at"] or 0))


def compare_models(settings: Settings, model_a: str, model_b: str, preset: str | None = None) -> dict:
    """Paired bootstrap of model A against model B on the images both captioned that have references.

    :returns: {"a": group, "b": group, "images", "scores_a", "scores_b", "diff": {score: {diff, ci95, p_value}}}
    """
    picked, candidates = {}, {}
    for side, model in (("a", model_a), ("b", model_b)):
        group = _latest_group(settings, model, preset)
        key = {k: group[k] for k in ("model", "checkpoint", "config_hash")}
        rows = CaptionReads(settings).captions(**key, **({"preset": preset} if preset else {}))
        picked[side] = {**key, "preset": ", ".join(group["presets"]) or None}
        candidates[side] = {r["sha256"]: [r.get("caption") or ""] for r in rows}
    common = [s for s in candidates["a"] if s in candidates["b"]]
    refs = _references(settings, common)
    if not any(s in refs for s in common):
        raise CompareError(
            f"{model_a} and {model_b} share {len(common)} captioned image(s), none with references; "
            "import references with `capq refs import FILE`"
        )
    out = metrics.compare(candidates["a"], candidates["b"], refs, samples=settings.bootstrap_samples, seed=0)
    return {
        "a": picked["a"],
        "b": picked["b"],
        "images": out["images"],
        "scores_a": out["a"],
        "scores_b": out["b"],
        "diff": out["diff"],
    }
