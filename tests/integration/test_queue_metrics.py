"""The exporter's values against real Redis and MongoDB: queue depth and oldest age per model and tier, workers
online, dead letters, newest evaluation scores."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from capq.names import heartbeat_key
from capq.queue_metrics import QueueCollector
from evaluation.score_metrics import score_families
from storage.aliases import AliasStore
from storage.db import mongo
from tests.conftest import flush_redis
from tests.e2e.conftest import make_job, random_images
from workers.deadletters import DeadLetters


def _samples(settings) -> dict:
    reg = CollectorRegistry()
    reg.register(QueueCollector(settings, lambda: score_families(settings)))
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(generate_latest(reg).decode())
        for s in f.samples
    }


def test_exporter_reports_queues_workers_dead_letters_and_scores(settings):
    flush_redis(settings)
    db = mongo(settings)
    try:
        # Given 5 blip images in shards of 2 queued on free 3 s ago, a live git heartbeat, one dead blip shard
        t0 = time.time()
        make_job(settings, random_images(5, seed=3), "blip", tier="free", shard_size=2)
        redis.Redis.from_url(settings.redis_url).set(heartbeat_key("git@host:1"), str(t0), ex=30)
        DeadLetters(settings).add(
            "capq.caption_shard", ["job", "blip", "default", ["a"], t0], "capq.blip.free", "boom", 5
        )
        # and two evaluations of git with CLIPScore, the newer at 0.31 (0.29-0.33)
        now = datetime.now(UTC)
        for at, value in ((now - timedelta(hours=1), 0.5), (now, 0.31)):
            db["evaluations"].insert_one(
                {
                    "model": "git",
                    "kind": "clipscore",
                    "created_at": at,
                    "scores": {"clipscore": value},
                    "ci95": {"clipscore": [value - 0.02, value + 0.02]},
                }
            )
        time.sleep(1.0)
        s = _samples(settings)
        # I expect the backlog where it is, its age, the worker, the dead letter and the newest score
        assert s[("capq_queue_shards", (("model", "blip"), ("tier", "free")))] == 3
        assert s[("capq_queue_shards", (("model", "blip"), ("tier", "premium")))] == 0
        age = s[("capq_queue_oldest_age_seconds", (("model", "blip"), ("tier", "free")))]
        assert 1.0 <= age <= time.time() - t0 + 1
        assert s[("capq_queue_oldest_age_seconds", (("model", "git"), ("tier", "free")))] == 0
        assert s[("capq_workers_online", (("model", "git"),))] == 1
        assert s[("capq_workers_online", (("model", "blip"),))] == 0
        assert s[("capq_dead_letters", (("model", "blip"),))] == 1
        labels = (("kind", "clipscore"), ("model", "git"), ("score", "clipscore"))
        assert s[("capq_eval_score", labels)] == 0.31
        assert round(s[("capq_eval_score_ci95_high", labels)], 4) == 0.33
        assert s[("capq_exporter_source_up", (("source", "redis"),))] == 1
        # and an alias's weights as shares
        AliasStore(settings).set(
            "caption-default", [{"model": "blip", "weight": 90}, {"model": "git", "weight": 10}], "t"
        )
        s = _samples(settings)
        assert s[("capq_alias_weight", (("alias", "caption-default"), ("model", "git")))] == pytest.approx(0.1)
    finally:
        flush_redis(settings)
        db["evaluations"].delete_many({"kind": "clipscore"})
        db["model_aliases"].delete_many({})
