"""score_metrics: the newest evaluation scores of each model and the weights of model aliases as Prometheus gauges
(read by `capq exporter`)."""

from __future__ import annotations

import math

from prometheus_client.core import GaugeMetricFamily

from capq.names import MODEL_NAMES
from capq.settings import Settings
from storage.aliases import AliasStore
from storage.evaluations import EvaluationStore

# Stored evaluation kinds: None are reference scores (BLEU, CIDEr, ...); the others need no references.
KINDS = {None: "references", "health": "health", "clipscore": "clipscore"}


def score_families(settings: Settings):
    """capq_eval_score{model,kind,score} with its 95% interval bounds and the evaluation's time."""
    store = EvaluationStore(settings)
    score = GaugeMetricFamily("capq_eval_score", "Newest evaluation score", labels=["model", "kind", "score"])
    low = GaugeMetricFamily(
        "capq_eval_score_ci95_low", "Lower bound of its 95% interval", labels=["model", "kind", "score"]
    )
    high = GaugeMetricFamily(
        "capq_eval_score_ci95_high", "Upper bound of its 95% interval", labels=["model", "kind", "score"]
    )
    when = GaugeMetricFamily(
        "capq_eval_timestamp_seconds", "When the newest evaluation was made", labels=["model", "kind"]
    )
    newest: dict = {}
    for model in MODEL_NAMES:
        for kind, kind_label in KINDS.items():
            doc = newest[(model, kind)] = store.newest(model, kind)
            if doc is None:
                continue
            when.add_metric([model, kind_label], doc["created_at"].timestamp())
            for name, value in (doc.get("scores") or {}).items():
                if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
                    continue
                labels = [model, kind_label, name]
                score.add_metric(labels, float(value))
                ci = (doc.get("ci95") or {}).get(name)
                if ci:
                    low.add_metric(labels, float(ci[0]))
                    high.add_metric(labels, float(ci[1]))
    yield from (score, low, high, when)
    yield from drop_families(newest)
    weight = GaugeMetricFamily(
        "capq_alias_weight", "Share of an alias's images each model gets (0-1)", labels=["alias", "model"]
    )
    for alias in AliasStore(settings).list():
        total = sum(a["weight"] for a in alias["arms"]) or 1
        for arm in alias["arms"]:
            weight.add_metric([alias["name"], arm["model"]], arm["weight"] / total)
    yield weight
    yield from alias_families(settings, store)


def drop_families(newest: dict):
    """Issue 18: the drop test of each model's newest evaluation ({(model, kind): doc}) against its trailing window:
    capq_eval_significant_drop{model,kind,score} 0/1 with the difference (new minus trailing), its 95% interval
    and p-value, and how many images the test paired."""
    labels = ["model", "kind", "score"]
    flag = GaugeMetricFamily(
        "capq_eval_significant_drop",
        "1 when the newest evaluation is significantly worse than its trailing window",
        labels=labels,
    )
    diff = GaugeMetricFamily(
        "capq_eval_drop_diff", "Newest minus trailing window, on the images compared", labels=labels
    )
    low = GaugeMetricFamily("capq_eval_drop_ci95_low", "Lower bound of the difference's 95% interval", labels=labels)
    high = GaugeMetricFamily("capq_eval_drop_ci95_high", "Upper bound of the difference's 95% interval", labels=labels)
    p = GaugeMetricFamily("capq_eval_drop_p_value", "Bootstrap p-value of the difference", labels=labels)
    images = GaugeMetricFamily(
        "capq_eval_drop_images",
        "Images the drop test compared (paired: scored by both)",
        labels=["model", "kind", "method"],
    )
    for model in MODEL_NAMES:
        for kind, kind_label in KINDS.items():
            test = (newest.get((model, kind)) or {}).get("drop")
            if not test:
                continue
            images.add_metric([model, kind_label, test["method"]], test["images"])
            for name, t in test["scores"].items():
                values = [t["diff"], t["ci95"][0], t["ci95"][1], t["p_value"]]
                if any(not isinstance(v, (int, float)) or math.isnan(v) for v in values):
                    continue
                row = [model, kind_label, name]
                flag.add_metric(row, 1.0 if t["significant"] else 0.0)
                for family, value in zip((diff, low, high, p), values):
                    family.add_metric(row, float(value))
    yield from (flag, diff, low, high, p, images)


def alias_families(settings: Settings, store: EvaluationStore):
    """Issue 18: the newest stored comparison of each alias's arms (evaluation.quality.compare_alias_arms): each
    arm's scores, and per pair of arms each score's difference, 95% interval, p-value and significance."""
    arm_score = GaugeMetricFamily(
        "capq_alias_arm_score",
        "An alias arm's score on the alias's traffic",
        labels=["alias", "model", "kind", "score"],
    )
    labels = ["alias", "pair", "kind", "score"]
    diff = GaugeMetricFamily("capq_alias_arm_diff", "Arm A minus arm B", labels=labels)
    low = GaugeMetricFamily(
        "capq_alias_arm_diff_ci95_low", "Lower bound of the difference's 95% interval", labels=labels
    )
    high = GaugeMetricFamily(
        "capq_alias_arm_diff_ci95_high", "Upper bound of the difference's 95% interval", labels=labels
    )
    p = GaugeMetricFamily("capq_alias_arm_p_value", "Bootstrap p-value of the difference", labels=labels)
    sig = GaugeMetricFamily("capq_alias_arm_significant", "1 when the arms differ significantly", labels=labels)
    for alias in AliasStore(settings).list():
        doc = store.newest_alias_comparison(alias["name"])
        if doc is None:
            continue
        for model, entry in doc.get("per_arm", {}).items():
            scores = {("health", k): v for k, v in (entry.get("health") or {}).items()}
            if entry.get("clipscore"):
                scores[("clipscore", "clipscore")] = entry["clipscore"]["mean"]
            scores |= {("references", k): v for k, v in ((entry.get("references") or {}).get("scores") or {}).items()}
            for (kind, name), value in scores.items():
                arm_score.add_metric([alias["name"], model, kind, name], float(value))
        for pair, kinds in doc.get("diff", {}).items():
            for kind, tested in kinds.items():
                for name, t in tested.items():
                    row = [alias["name"], pair, kind, name]
                    for family, value in (
                        (diff, t["diff"]),
                        (low, t["ci95"][0]),
                        (high, t["ci95"][1]),
                        (p, t["p_value"]),
                        (sig, 1.0 if t["significant"] else 0.0),
                    ):
                        family.add_metric(row, float(value))
    yield from (arm_score, diff, low, high, p, sig)
