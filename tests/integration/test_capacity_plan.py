"""Capacity planning against real Redis and MongoDB: queued shards, arrivals recorded at submission and measured worker
throughput give the plan the arithmetic says, in `capq capacity`, GET /v1/capacity (admin only) and the exporter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from capq import throughput
from capq.capacity import CapacityCollector, plan
from capq.names import WORKER_HEARTBEAT_KEY
from capq.settings import load_settings
from producer.api import create_app
from producer.keys_admin import create_key
from storage.db import mongo
from storage.throughput import Throughput
from tests.conftest import REPO, flush_redis, settings_env
from tests.e2e.conftest import make_job, random_images


@pytest.fixture
def capsettings(settings):
    s = load_settings(
        {
            **settings_env(settings),
            "CAPQ_ARRIVAL_WINDOW_S": "100",
            "CAPQ_CAPACITY_TARGET_AGE_S": "10",
            "CAPQ_CAPACITY_MAX_UTILIZATION": "0.8",
        }
    )
    flush_redis(s)
    mongo(s)["job_items"].delete_many({})
    yield s
    flush_redis(s)


def test_the_plan_follows_queued_work_arrivals_and_measured_throughput(capsettings):
    # Given 40 vit-gpt2 images submitted now (0.4 images/s over the 100 s window) and queued in 4 shards
    make_job(capsettings, random_images(40, seed=11), "vit-gpt2", tier="free", shard_size=10)
    # and two workers measured at 2 and 3 images/s (20 in 10 s, 30 in 10 s), one of them online
    throughput.record(capsettings, "vit-gpt2", "vit-gpt2@h:1", 20, 10.0)
    throughput.record(capsettings, "vit-gpt2", "vit-gpt2@h:2", 30, 10.0)
    redis.Redis.from_url(capsettings.redis_url).set(WORKER_HEARTBEAT_KEY + "vit-gpt2@h:1", "1", ex=60)
    # I expect: needed = ceil((0.4 + 40/10) / 2.5) = 2; drain with 1 worker 40 / (2.5 - 0.4), with 2 40 / (5 - 0.4)
    row = next(r for r in plan(capsettings, Throughput(capsettings).arrivals)["models"] if r["model"] == "vit-gpt2")
    assert (row["backlog_images"], row["arrival_images_per_s"], row["per_worker_images_per_s"]) == (40, 0.4, 2.5)
    assert row["workers_online"] == 1 and row["workers_needed"] == 2
    assert row["drain_s"] == pytest.approx(19.0, abs=0.1) and row["drain_s_with_needed"] == pytest.approx(8.7, abs=0.1)
    assert row["oldest_age_s"] >= 0
    # and git, with nothing queued or arriving, needs none
    git = next(r for r in plan(capsettings, Throughput(capsettings).arrivals)["models"] if r["model"] == "git")
    assert git["workers_needed"] == 0 and git["backlog_images"] == 0

    # the same from `capq capacity --json`
    env = {**os.environ, **settings_env(capsettings)}
    run = subprocess.run(
        [sys.executable, "-m", "capq", "capacity", "--model", "vit-gpt2", "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["models"][0]["workers_needed"] == 2

    # from GET /v1/capacity, for an admin key only
    client = TestClient(create_app(capsettings))
    admin, _ = create_key(capsettings, "ops", "premium", role="admin")
    user, _ = create_key(capsettings, "alice", "free")
    body = client.get("/v1/capacity", headers={"X-API-Key": admin}).json()
    assert next(r for r in body["models"] if r["model"] == "vit-gpt2")["workers_needed"] == 2
    refused = client.get("/v1/capacity", headers={"X-API-Key": user})
    assert refused.status_code == 403 and "admin" in refused.json()["error"]

    # and as the exporter's gauges
    reg = CollectorRegistry()
    reg.register(CapacityCollector(capsettings, Throughput(capsettings).arrivals))
    samples = {
        (s.name, s.labels.get("model")): s.value
        for f in text_string_to_metric_families(generate_latest(reg).decode())
        for s in f.samples
    }
    assert samples[("capq_capacity_workers_needed", "vit-gpt2")] == 2
    assert samples[("capq_capacity_backlog_images", "vit-gpt2")] == 40
    assert samples[("capq_capacity_drain_seconds", "vit-gpt2")] == pytest.approx(19.0, abs=0.1)
