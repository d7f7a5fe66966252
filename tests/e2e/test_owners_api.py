"""Owners over a real API process and a real worker: admin roles, key rotation, quotas, usage and self-erasure."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis

from capq.names import caption_queues
from storage.apikeys import ApiKeys
from storage.blobs import ImageStore
from storage.db import mongo
from tests.conftest import REPO, free_port, settings_env
from tests.e2e.procs import spawn_capq, stop
from tests.integration.test_owners import traces
from tests.integration.test_producer_submit import random_jpeg
from tooling import procs
from tooling.workers import wait_heartbeat

PRICE_PER_HOUR = 3.6  # USD per GPU-hour for blip on cpu: a cost in dollars is GPU-seconds / 1000


@pytest.fixture(scope="module")
def env(psettings):  # noqa: F811
    return {
        **os.environ,
        **settings_env(psettings),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "CAPQ_LOG_JSON": "false",
        "CAPQ_DAILY_IMAGE_QUOTAS": "plus=2",
        "CAPQ_GPU_HOUR_PRICES": f"blip:cpu={PRICE_PER_HOUR}",
        "CAPQ_RATE_LIMITS_PER_HOUR": "free=1000,plus=1000,premium=1000",
    }


@pytest.fixture(scope="module")
def api(env):
    """`capq api` as its own process; ready when /healthz answers 200."""
    port = free_port()
    proc = spawn_capq(env, "owners-api", "api", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        procs.wait_ready(proc, lambda: procs.http_ok(f"{base}/healthz"), 60, "the API")
        with httpx.Client(base_url=base, timeout=60) as client:
            yield client
    finally:
        stop(proc, timeout_s=20)


@pytest.fixture(scope="module")
def worker(psettings, env):  # noqa: F811
    """A real blip worker (tiny model) exporting Prometheus metrics; -> its metrics URL."""
    from tooling.tiny import make_tiny

    checkpoint = make_tiny(psettings.models_dir, ["blip"])["blip"]
    port = free_port()
    # Batches of 2: a 40-image shard takes 20 model calls, so an erasure lands while the worker is on it.
    proc = spawn_capq(
        env,
        "owners-worker",
        "worker",
        "--model",
        "blip",
        "--checkpoint",
        str(checkpoint),
        "--metrics-port",
        str(port),
        "--batch-size",
        "2",
    )
    try:
        wait_heartbeat(proc, "blip", psettings.redis_url)
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        stop(proc, timeout_s=20)


def key(settings, owner: str, tier: str = "premium", role: str = "user") -> dict:
    return {"X-API-Key": ApiKeys(settings).create(owner, tier, role=role)[0]}


def upload(api, headers, files: list[tuple[str, bytes]]):
    return api.post(
        "/v1/jobs",
        headers=headers,
        data={"models": "blip"},
        files=[("files", (name, data, "image/jpeg")) for name, data in files],
    )


def wait_done(api, headers, job_id: str) -> dict:
    deadline = time.monotonic() + 180  # only stops a hung test
    while (job := api.get(f"/v1/jobs/{job_id}", headers=headers).json())["state"] != "done":
        assert time.monotonic() < deadline, f"job not done: {job}"
        time.sleep(0.3)
    return job


def worker_idle(settings) -> None:
    """Until no shard waits in a blip queue and none is held unacknowledged by the worker."""
    client = redis.Redis.from_url(settings.redis_url)
    deadline = time.monotonic() + 180
    while any(client.llen(q) for q in caption_queues("blip")) or client.hlen("unacked"):
        assert time.monotonic() < deadline, "worker never went idle"
        time.sleep(0.3)


# (method, route as OpenAPI lists it, a concrete path, request arguments)
ADMIN_ROUTES = [
    ("GET", "/v1/admin/owners", "/v1/admin/owners", {}),
    ("GET", "/v1/admin/owners/{owner}/jobs", "/v1/admin/owners/bob/jobs", {}),
    ("GET", "/v1/admin/jobs/{job_id}", "/v1/admin/jobs/0123456789abcdef", {}),
    ("GET", "/v1/admin/usage", "/v1/admin/usage", {}),
    ("DELETE", "/v1/admin/owners/{owner}", "/v1/admin/owners/bob", {}),
    ("GET", "/v1/admin/keys", "/v1/admin/keys", {}),
    ("POST", "/v1/admin/keys", "/v1/admin/keys", {"json": {"owner": "x", "tier": "free"}}),
    ("DELETE", "/v1/admin/keys/{prefix}", "/v1/admin/keys/capq_abcdefgh", {}),
    ("POST", "/v1/admin/keys/{prefix}/rotate", "/v1/admin/keys/capq_abcdefgh/rotate", {}),
]


def test_every_admin_route_refuses_a_user_key(api, psettings):  # noqa: F811
    spec = api.get("/openapi.json").json()["paths"]
    listed = {(m.upper(), p) for p, ops in spec.items() if p.startswith("/v1/admin") for m in ops}
    assert listed == {(m, route) for m, route, _, _ in ADMIN_ROUTES}, "the test covers every admin route"
    user = key(psettings, "ursula")
    for method, _, path, kwargs in ADMIN_ROUTES:
        resp = api.request(method, path, headers=user, **kwargs)
        assert resp.status_code == 403, (method, path, resp.text)
        assert "needs an admin key" in resp.json()["error"]
    assert api.get("/v1/admin/owners").status_code == 401  # no key at all is still 401
    admin = key(psettings, "root", role="admin")
    owners = api.get("/v1/admin/owners", headers=admin).json()["owners"]
    assert {"ursula", "root"} <= {o["owner"] for o in owners}
    missing = api.delete("/v1/admin/owners/nobody", headers=admin)
    assert missing.status_code == 404 and "no owner 'nobody'" in missing.json()["error"]
    for body, needle in (
        ({"owner": "gina", "tier": "gold"}, "unknown tier"),
        ({"owner": "gina", "tier": "free", "role": "root"}, "unknown role"),
        ({"owner": "../x", "tier": "free"}, "owner '../x'"),
        ({"owner": "gina", "tier": "free", "key": "mine"}, "unknown field"),
    ):
        bad = api.post("/v1/admin/keys", headers=admin, json=body)
        assert bad.status_code == 400 and needle in bad.json()["error"], bad.text
    bad_by = api.get("/v1/usage", headers=user, params={"by": "weekday"})
    assert bad_by.status_code == 400 and "by must be one of model, day, tier" in bad_by.json()["error"]


def test_key_rotation_keeps_the_old_key_for_its_grace_period_only(api, psettings):  # noqa: F811
    admin = key(psettings, "root2", role="admin")
    made = api.post("/v1/admin/keys", headers=admin, json={"owner": "gina", "tier": "free", "note": "ci"})
    assert made.status_code == 201 and made.json()["record"]["role"] == "user"
    old = {"X-API-Key": made.json()["key"]}
    # The owner rotates her own key with an hour's grace: both keys work
    rotated = api.post("/v1/me/key/rotate", headers=old, params={"grace_s": "3600"}).json()
    new = {"X-API-Key": rotated["key"]}
    assert api.get("/v1/jobs", headers=old).status_code == 200 and api.get("/v1/jobs", headers=new).status_code == 200
    assert rotated["old"]["expires_at"] and rotated["new"]["tier"] == "free"
    # An admin rotates the new one with no grace: it stops at once, the newest works
    again = api.post(f"/v1/admin/keys/{rotated['new']['prefix']}/rotate", headers=admin, params={"grace_s": "0"})
    assert api.get("/v1/jobs", headers=new).status_code == 401
    assert api.get("/v1/jobs", headers={"X-API-Key": again.json()["key"]}).status_code == 200
    listed = {k["prefix"]: k for k in api.get("/v1/admin/keys", headers=admin, params={"owner": "gina"}).json()["keys"]}
    first = listed[made.json()["record"]["prefix"]]
    assert first["requests_hour"] == first["requests_day"] == 2 and first["last_used_at"] and first["role"] == "user"
    assert all("key_hash" not in k and "key" not in k for k in listed.values())
    # Revoked over the API, the old key stops before its grace is up
    assert api.delete(f"/v1/admin/keys/{first['prefix']}", headers=admin).status_code == 200
    assert api.get("/v1/jobs", headers=old).status_code == 401
    bad = api.post(f"/v1/admin/keys/{first['prefix']}/rotate", headers=admin, params={"grace_s": "soon"})
    assert bad.status_code == 400 and "no live key" in bad.json()["error"]


def test_a_tier_past_its_daily_quota_gets_429_with_the_reset_time(api, psettings):  # noqa: F811
    hugo = key(psettings, "hugo", tier="plus")
    first = upload(api, hugo, [("h1.jpg", random_jpeg(301)), ("h2.jpg", random_jpeg(302))])
    assert first.status_code == 202, first.text
    over = upload(api, hugo, [("h3.jpg", random_jpeg(303))])
    assert over.status_code == 429
    body = over.json()
    assert "daily quota reached" in body["error"] and "tier plus allows 2" in body["error"]
    assert 0 < int(over.headers["Retry-After"]) <= 86400 and body["reset_at"].endswith("+00:00")
    assert upload(api, key(psettings, "ivy", tier="premium"), [("i.jpg", random_jpeg(304))]).status_code == 202


def _metric(text: str, name: str, labels: str) -> float:
    found = re.search(rf"^{name}{{{labels}}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_usage_matches_the_results_and_self_erasure_with_work_in_flight(api, worker, psettings, env):  # noqa: F811
    s, db = psettings, mongo(psettings)
    bob, admin = key(s, "bob"), key(s, "root3", role="admin")
    shared = random_jpeg(401)
    worker_idle(s)  # work other tests queued before this worker started is done: the metrics' baseline
    before = httpx.get(worker).text
    # Given bob's job, captioned, and the same two images again (reused captions cost nothing)
    bob_files = [("bob-shared.jpg", shared), ("bob-own.jpg", random_jpeg(402))]
    bob_job = upload(api, bob, bob_files).json()["job_id"]
    first = wait_done(api, bob, bob_job)
    wait_done(api, bob, upload(api, bob, bob_files).json()["job_id"])
    # I expect usage to equal the sum of the per-caption records
    results = list(db["job_results"].find({"owner": "bob"}))
    gpu_s = sum(r["gpu_s"] for r in results)
    usage = api.get("/v1/usage", headers=bob, params={"since": "1d"}).json()
    assert usage["total"]["images"] == 2 and usage["total"]["reused"] == 2 and gpu_s > 0
    assert usage["total"]["gpu_s"] == pytest.approx(gpu_s, abs=1e-5)
    assert usage["total"]["cost_usd"] == pytest.approx(gpu_s / 3600 * PRICE_PER_HOUR, abs=1e-6)
    assert first["gpu_s"] == pytest.approx(sum(r["gpu_s"] for r in results if r["job_id"] == bob_job), abs=1e-9)
    cli = subprocess.run(
        [sys.executable, "-m", "capq", "usage", "--owner", "bob", "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(cli.stdout)["total"] == usage["total"]
    by_day = subprocess.run(
        [sys.executable, "-m", "capq", "usage", "--owner", "bob", "--by", "day", "--csv"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    rows = list(csv.DictReader(io.StringIO(by_day)))
    assert len(rows) == 1 and int(rows[0]["images"]) == 2 and float(rows[0]["gpu_s"]) == pytest.approx(gpu_s, abs=1e-5)
    worker_idle(s)
    metrics = httpx.get(worker).text
    labels = 'model="blip",tier="premium"'
    assert (
        _metric(metrics, "capq_usage_images_total", labels) - _metric(before, "capq_usage_images_total", labels)
    ) == 2
    assert (
        _metric(metrics, "capq_usage_gpu_seconds_total", labels)
        - _metric(before, "capq_usage_gpu_seconds_total", labels)
    ) == pytest.approx(gpu_s, abs=1e-3)
    assert "owner=" not in metrics

    # Given alice, with two keys, who submitted bob's shared image among 40 of her own
    alice, alice2 = key(s, "alice"), key(s, "alice")
    files = [("alice-shared.jpg", shared)] + [(f"alice-{i}.jpg", random_jpeg(500 + i)) for i in range(40)]
    alice_job = upload(api, alice, files).json()["job_id"]
    deadline = time.monotonic() + 180  # only stops a hung test
    while api.get(f"/v1/jobs/{alice_job}", headers=alice).json()["counts"]["done"] == 0:
        assert time.monotonic() < deadline, "the worker never started on alice's job"
        time.sleep(0.05)
    # If she erases her data while the worker is still on her job
    erased = api.delete("/v1/me/data", headers=alice)
    assert erased.status_code == 200 and erased.json()["removed"]["keys"] == 1
    worker_idle(s)
    # I expect nothing of hers left but the key she called with (and the audit record)...
    assert api.get("/v1/jobs", headers=alice2).status_code == 401
    assert api.get("/v1/jobs", headers=alice).json() == {"jobs": []}
    assert api.get("/v1/usage", headers=alice).json()["total"]["images"] == 0
    left = traces(s, ["alice", alice_job])
    assert left == ["api_keys: alice"], left
    # ...and after an admin erases her entirely, not even that
    gone = api.delete("/v1/admin/owners/alice", headers=admin)
    assert gone.status_code == 200 and gone.json()["removed"]["keys"] == 1
    assert api.get("/v1/jobs", headers=alice).status_code == 401 and traces(s, ["alice", alice_job]) == []
    assert [k for k in redis.Redis.from_url(s.redis_url).scan_iter() if b"alice" in k] == []  # quota counters
    # Bob sees nothing change: his shared image, its caption and his jobs are intact
    assert api.get(f"/v1/jobs/{bob_job}", headers=bob).json()["counts"] == first["counts"]
    rows = api.get(f"/v1/jobs/{bob_job}/results", headers=bob).json()["results"]
    assert all(r["status"] == "done" and r["caption"] for r in rows)
    shared_sha = next(r["sha256"] for r in rows if r["file_name"] == "bob-shared.jpg")
    assert ImageStore(s).exists(shared_sha) and db["captions"].count_documents({"sha256": shared_sha}) == 1
    assert db["images"].find_one({"sha256": shared_sha})["file_names"] == ["bob-shared.jpg"]
    audit = api.get("/v1/admin/usage", headers=admin, params={"by": "owner"}).json()
    assert "alice" not in {r["owner"] for r in audit["rows"]}


def test_beat_sends_retention_and_the_eval_worker_runs_it(api, worker, psettings, env):  # noqa: F811
    s, db = psettings, mongo(psettings)
    # Given an image captioned in a finished job and aged past a 30-day retention, and a fresh one
    olga = key(s, "olga")
    old_job = upload(api, olga, [("old.jpg", random_jpeg(701))]).json()["job_id"]
    fresh_job = upload(api, olga, [("fresh.jpg", random_jpeg(702))]).json()["job_id"]
    wait_done(api, olga, old_job)
    wait_done(api, olga, fresh_job)
    old_sha = db["job_items"].find_one({"job_id": old_job})["sha256"]
    fresh_sha = db["job_items"].find_one({"job_id": fresh_job})["sha256"]
    long_ago = datetime.now(UTC) - timedelta(days=40)
    db["images"].update_one({"sha256": old_sha}, {"$set": {"first_seen": long_ago}})
    db["job_items"].update_many({"sha256": old_sha}, {"$set": {"created_at": long_ago}})
    # If beat (retention on, every second) and an eval worker run
    retention_env = {**env, "CAPQ_RETENTION_DAYS": "30", "CAPQ_RETENTION_INTERVAL_S": "1"}
    started = [
        spawn_capq(retention_env, "owners-eval-worker", "eval", "worker"),
        spawn_capq(retention_env, "owners-beat", "beat"),
    ]
    try:
        deadline = time.monotonic() + 180  # only stops a hung test
        while db["images"].count_documents({"sha256": old_sha}):
            assert all(procs.alive(p) for p in started), "beat or the eval worker exited"
            assert time.monotonic() < deadline, "retention never ran"
            time.sleep(0.5)
    finally:
        stop(*started, timeout_s=20)
    # I expect the old image gone with its records and bytes, the fresh one kept
    assert not ImageStore(s).exists(old_sha) and db["captions"].count_documents({"sha256": old_sha}) == 0
    assert db["job_results"].count_documents({"sha256": old_sha}) == 0
    assert ImageStore(s).exists(fresh_sha) and db["images"].count_documents({"sha256": fresh_sha}) == 1
    assert db["audit"].find_one({"action": "retention", "state": "done"})["by"] == "retention"
