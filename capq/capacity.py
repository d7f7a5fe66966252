"""capacity: per model, the workers needed to keep queued work under a target age and the time to drain the backlog,
from measured per-worker throughput and recent arrivals."""

# The plan, with c = workers x per-worker images/s, arrivals a images/s and a backlog of B images:
# - keep up with arrivals with headroom: c >= a / max_utilization (a queue whose workers are busy all the time
#   grows without bound at the first burst);
# - drain today's backlog, while work keeps arriving, within the target age: B / (c - a) <= T, i.e. c >= a + B / T.
#   Then every image queued now is taken within T from now, and work arriving later waits behind a shrinking queue.
# Workers needed = ceil(max of the two / per-worker rate); drain time = B / (c - a) (never, when c <= a).
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from prometheus_client.core import GaugeMetricFamily

from capq.names import MODEL_NAMES, TIERS, caption_queue, caption_queues
from capq.queue_metrics import in_flight, read_queue, redis_client
from capq.settings import Settings
from capq.throughput import live_workers, worker_rates

log = logging.getLogger("capq.exporter")
# (models, window_s) -> {model: images submitted in the last window_s seconds}; the caller reads them from MongoDB
# (storage.throughput.Throughput.arrivals): the core imports no storage.
Arrivals = Callable[[list[str], int], dict[str, int]]


def workers_needed(
    arrival_per_s: float, backlog: float, per_worker_per_s: float, target_age_s: float, max_utilization: float = 1.0
) -> int:
    """The fewest workers that keep up with arrivals at most max_utilization busy and drain `backlog` images within
    target_age_s while arrivals continue (0 when there is neither work nor arrivals)."""
    if per_worker_per_s <= 0 or target_age_s <= 0 or not 0 < max_utilization <= 1:
        raise ValueError("per-worker rate and target age must be > 0, max utilization in (0, 1]")
    capacity = max(arrival_per_s / max_utilization, arrival_per_s + backlog / target_age_s)
    # A hair of tolerance: 2.0000000001 workers' worth of float arithmetic is 2 workers.
    return max(0, math.ceil(capacity / per_worker_per_s - 1e-9))


def drain_seconds(backlog: float, workers: int, per_worker_per_s: float, arrival_per_s: float) -> float:
    """Seconds until `backlog` images are gone with `workers` workers while work keeps arriving; inf when the
    workers do not outpace arrivals (0 with no backlog)."""
    if backlog <= 0:
        return 0.0
    net = workers * per_worker_per_s - arrival_per_s
    return backlog / net if net > 0 else math.inf


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else round(x, 1)


def model_plan(
    settings: Settings,
    model: str,
    online: int,
    rates: dict[str, float],
    arrivals: int,
    backlog: int,
    oldest_age_s: float,
) -> dict:
    """One model's row of the plan from what was measured."""
    arrival = arrivals / settings.arrival_window_s
    row = {
        "model": model,
        "workers_online": online,
        "backlog_images": backlog,
        "oldest_age_s": round(oldest_age_s, 1),
        "arrival_images_per_s": round(arrival, 4),
        "target_age_s": settings.capacity_target_age_s,
        "per_worker_images_per_s": None,
        "workers_needed": None,
        "drain_s": None,
        "drain_s_with_needed": None,
    }
    if not rates:
        if backlog or arrivals:
            row["reason"] = (
                f"no {model} worker finished a shard in the last {settings.throughput_window_s} s: start "
                "one to measure its throughput"
            )
        else:
            row["workers_needed"], row["drain_s"], row["drain_s_with_needed"] = 0, 0.0, 0.0
        return row
    # The mean worker: rates of workers on different GPUs differ, and a plan adds workers like the ones measured.
    per_worker = sum(rates.values()) / len(rates)
    needed = workers_needed(
        arrival, backlog, per_worker, settings.capacity_target_age_s, settings.capacity_max_utilization
    )
    return row | {
        "per_worker_images_per_s": round(per_worker, 3),
        "workers_needed": needed,
        "drain_s": _finite(drain_seconds(backlog, online, per_worker, arrival)),
        "drain_s_with_needed": _finite(drain_seconds(backlog, needed, per_worker, arrival)),
    }


def plan(settings: Settings, arrivals_of: Arrivals, models: list[str] | None = None) -> dict:
    """{"models": [row per model], "target_age_s", "arrival_window_s", "throughput_window_s"} from Redis (queues,
    workers, throughput) and `arrivals_of` (MongoDB's recent submissions)."""
    models = list(models or MODEL_NAMES)
    client = redis_client(settings)
    live, now = live_workers(client), time.time()
    held = in_flight(client)
    arrivals = arrivals_of(models, settings.arrival_window_s)
    rows = []
    for model in models:
        queues = [read_queue(client, caption_queue(model, t)) for t in TIERS]
        names = set(caption_queues(model))
        backlog = sum(q.images for q in queues) + sum(n for q, _job, n, _at in held if q in names)
        oldest = min((q.oldest_at for q in queues if q.oldest_at), default=None)
        rows.append(
            model_plan(
                settings,
                model,
                len(live.get(model, [])),
                worker_rates(client, model, settings.throughput_window_s),
                arrivals[model],
                backlog,
                max(0.0, now - oldest) if oldest else 0.0,
            )
        )
    return {
        "models": rows,
        "target_age_s": settings.capacity_target_age_s,
        "max_utilization": settings.capacity_max_utilization,
        "arrival_window_s": settings.arrival_window_s,
        "throughput_window_s": settings.throughput_window_s,
    }


class CapacityCollector:
    """capq_capacity_* gauges per model, computed at scrape time by `capq exporter`."""

    def __init__(self, settings: Settings, arrivals_of: Arrivals):
        self.settings = settings
        self.arrivals_of = arrivals_of

    def describe(self):
        return []

    def collect(self):
        fams = {
            key: GaugeMetricFamily(f"capq_capacity_{name}", text, labels=["model"])
            for key, name, text in (
                ("workers_needed", "workers_needed", "Workers needed to keep queued work under the target age"),
                ("drain_s", "drain_seconds", "Seconds to drain the backlog with the workers online (+Inf: never)"),
                ("arrival_images_per_s", "arrival_images_per_second", "Images submitted per second, recent window"),
                ("per_worker_images_per_s", "worker_images_per_second", "Measured images per second of one worker"),
                ("backlog_images", "backlog_images", "Images queued or held by workers"),
            )
        }
        try:
            rows = plan(self.settings, self.arrivals_of)["models"]
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when Redis or MongoDB does not
            log.warning("capacity unreadable: %s", exc)
            rows = []
        for row in rows:
            for key, fam in fams.items():
                value = row[key]
                if key == "drain_s" and value is None and row["workers_needed"] is not None:
                    value = math.inf  # measured, and the workers online never catch up
                if value is not None:
                    fam.add_metric([row["model"]], float(value))
        yield from fams.values()
