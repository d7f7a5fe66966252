"""eta: when each unfinished job should finish, from the queue ahead of it (tier shares included) and its model's live
throughput."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import redis

from capq.names import TIERS, caption_queue, caption_queues
from capq.queue_metrics import QueueState, in_flight, read_queue, redis_client
from capq.settings import Settings
from capq.throughput import model_rates
from capq.tiers import slot_schedule

UNFINISHED = ("submitting", "queued", "running")


def tier_shares(weights: dict[str, int], busy: set[str]) -> dict[str, float]:
    """Each busy tier's share of a worker's picks, as capq.tiers.TierCycle makes them: a slot goes to its own
    tier when that tier has work, else falls through to the highest busy tier (so a 0-weight tier gets the
    slots only when every other tier is empty)."""
    slots = slot_schedule(weights)
    served = {t: 0 for t in busy}
    for slot in slots:
        served[slot if slot in busy else next(t for t in TIERS if t in busy)] += 1
    return {t: n / len(slots) for t, n in served.items()}


def finish_seconds(
    tier: str, through_job: float, depths: dict[str, float], weights: dict[str, int], rate: float
) -> float:
    """Seconds until `through_job` images of `tier` are done while the other tiers hold `depths` images, at
    `rate` images/s shared by tier_shares: piecewise, each phase lasting until one busy tier runs empty."""
    left = {t: float(n) for t, n in depths.items() if t != tier} | {tier: float(through_job)}
    seconds = 0.0
    while left[tier] > 1e-9:
        busy = {t for t, n in left.items() if n > 1e-9}
        shares = tier_shares(weights, busy)
        speed = {t: rate * s for t, s in shares.items() if s > 0}
        dt = min(left[t] / v for t, v in speed.items())
        for t, v in speed.items():
            left[t] = max(0.0, left[t] - v * dt)
        seconds += dt
    return seconds


class EtaSource:
    """Reads each queue and each model's rate once, however many jobs are estimated from them."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.client = redis_client(settings)
        self.queues: dict[str, QueueState] = {}
        self.rates: dict[str, float | None] = {}
        self.held: list[tuple[str, str | None, int, float]] | None = None

    def queue(self, model: str, tier: str) -> QueueState:
        name = caption_queue(model, tier)
        if name not in self.queues:
            self.queues[name] = read_queue(self.client, name)
        return self.queues[name]

    def held_by_workers(self, model: str) -> list[tuple[str | None, int, float]]:
        """(job id, images, taken_at) of the shards the model's workers hold now."""
        if self.held is None:
            self.held = in_flight(self.client)
        queues = set(caption_queues(model))
        return [(job, n, at) for q, job, n, at in self.held if q in queues]

    def in_flight_s(self, model: str, rate: float) -> float:
        """Seconds of work left in the shards the model's workers hold now: each worker goes at rate / workers,
        and a shard taken t seconds ago has that much less to do. Everything queued waits behind it."""
        held = [(n, at) for _job, n, at in self.held_by_workers(model)]
        if not held:
            return 0.0
        per_worker, now = rate / max(1, len(held)), time.time()
        return sum(max(0.0, n - (now - at) * per_worker) for n, at in held) / rate

    def rate(self, model: str) -> float | None:
        if model not in self.rates:
            self.rates.update(model_rates(self.settings, [model]))
        return self.rates[model]

    def model_eta(self, job_id: str, model: str, tier: str) -> dict:
        """{model, ahead_images, rate_images_per_s, eta_s | None, reason?} for one model of one job."""
        q = self.queue(model, tier)
        through = q.through_job.get(job_id)
        out = {"model": model, "ahead_images": through or 0}
        rate = self.rate(model)
        if through is None:  # nothing of this job waits in the queue: in a worker's hands, or done
            mine = any(job == job_id for job, _n, _at in self.held_by_workers(model))
            return out | {
                "eta_s": round(self.in_flight_s(model, rate), 1) if mine and rate else 0.0,
                "rate_images_per_s": rate,
            }
        out["rate_images_per_s"] = None if rate is None else round(rate, 3)
        if rate is None:
            return out | {
                "eta_s": None,
                "reason": f"no {model} worker online with a measured throughput "
                f"(in the last {self.settings.throughput_window_s} s)",
            }
        depths = {t: self.queue(model, t).images for t in TIERS if t != tier}
        eta_s = self.in_flight_s(model, rate) + finish_seconds(tier, through, depths, self.settings.tier_weights, rate)
        return out | {"eta_s": round(eta_s, 1)}

    def job_eta(self, job: dict) -> dict | None:
        """{eta_s, eta_at, per_model} for an unfinished job (the slowest model decides); None when finished."""
        if job["state"] not in UNFINISHED:
            return None
        per_model = [self.model_eta(job["job_id"], m, job["tier"]) for m in job["models"]]
        unknown = [m for m in per_model if m["eta_s"] is None]
        if unknown:
            return {
                "eta_s": None,
                "eta_at": None,
                "reason": "; ".join(m["reason"] for m in unknown),
                "per_model": per_model,
            }
        eta_s = max(m["eta_s"] for m in per_model)
        at = datetime.fromtimestamp(time.time() + eta_s, UTC).isoformat(timespec="seconds")
        return {"eta_s": eta_s, "eta_at": at, "per_model": per_model}


def with_etas(settings: Settings, jobs: list[dict]) -> list[dict]:
    """The public job records, each with its "eta" (None for a finished job). A broker outage gives every
    unfinished job an unknown ETA with the reason, never an error: status must answer while Redis is down."""
    source = EtaSource(settings)
    for job in jobs:
        try:
            job["eta"] = source.job_eta(job)
        except redis.RedisError as exc:
            job["eta"] = {"eta_s": None, "eta_at": None, "reason": f"broker unreachable: {exc}", "per_model": []}
    return jobs
