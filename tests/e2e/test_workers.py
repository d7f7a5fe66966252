"""Caption workers as real processes: real Redis queues, MongoDB wire server, S3 server, tiny models."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from capq.names import MODEL_NAMES
from storage.blobs import ImageStore, sha256_hex
from storage.captions import CaptionStore
from storage.jobs import JobStore
from tests.conftest import REPO, SEED_IMAGES, free_port, settings_env
from tests.e2e.conftest import env_settings, make_job, random_images, wait_job, wait_job_closed
from tests.unit.test_imaging import damaged_jpeg
from tooling.stack import mongo_service


def seed_images() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in SEED_IMAGES]


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_each_architecture_captions_the_seed_images(settings, workers, tiny_models, model):
    # Given a worker pinned to the model
    workers.start(model)
    # If the 10 seed images are submitted
    images = seed_images()
    # (the workers must close the job themselves: this waiter only reads it)
    job = wait_job_closed(settings, make_job(settings, images, model))
    # I expect one string caption per image, and the same captions the model gives in-process (deterministic)
    assert job["counts"]["done"] == 10 and job["counts"]["failed"] == 0
    items = {it["sha256"]: it for it in JobStore(settings).items_of(job["_id"])}
    assert len(items) == 10 and all(isinstance(it["caption"], str) for it in items.values())

    from capq.imaging import decode_rgb
    from capq.presets import get_preset
    from workers.models import load_captioner

    local = load_captioner(model, str(tiny_models / model))
    expected = local.generate(
        [
            local.preprocess(
                decode_rgb(
                    data, settings.max_image_pixels, settings.worker_decode_max_side_px, min_size=local.draft_size
                )
            )
            for _, data in images
        ],
        get_preset(model, "default"),
    )
    assert [items[sha256_hex(data)]["caption"] for _, data in images] == expected
    # Distinct captions per image make "in input order" mean something: a mix-up of images would show.
    assert len(set(expected)) == len(images), expected


def test_existing_caption_is_reused_not_recomputed(settings, workers):
    workers.start("git")
    images = random_images(4, seed=7)
    wait_job(settings, make_job(settings, images, "git"))
    second = wait_job(settings, make_job(settings, images, "git"))
    items = JobStore(settings).items_of(second["_id"])
    assert second["counts"]["done"] == 4 and all(it["reused"] for it in items)
    assert CaptionStore(settings).count({"sha256": {"$in": [sha256_hex(d) for _, d in images]}, "model": "git"}) == 4


def test_bad_images_are_failed_with_reasons_and_the_job_completes(settings, workers):
    workers.start("vit-gpt2")
    good = seed_images()[:3]
    jpeg = good[0][1]
    bad = [
        ("corrupt.jpg", b"\xff\xd8\xff\xe0 this is not really a jpeg"),
        ("truncated.jpg", jpeg[: len(jpeg) // 3]),
        ("empty.jpg", b""),
        ("damaged.jpg", damaged_jpeg(jpeg)),
    ]
    store = ImageStore(settings)
    job_id = make_job(settings, good + bad, "vit-gpt2")
    # A missing object: recorded as an item but never uploaded.
    missing = [("missing.jpg", b"never uploaded bytes")]
    job2 = make_job(settings, missing, "vit-gpt2", upload=False)
    assert not store.exists(sha256_hex(missing[0][1]))

    job = wait_job_closed(settings, job_id)
    assert job["counts"] == {"queued": 0, "done": 3, "failed": 4, "cancelled": 0, "total": 7}
    reasons = {
        it["file_name"]: it.get("error", "") for it in JobStore(settings).items_of(job_id) if it["state"] == "failed"
    }
    assert reasons["corrupt.jpg"].startswith("undecodable:")
    assert reasons["truncated.jpg"].startswith("undecodable:") and "truncated" in reasons["truncated.jpg"]
    assert reasons["empty.jpg"].startswith("undecodable:") and "empty" in reasons["empty.jpg"]
    # damage inside the compressed data, which submission's cheap check lets through, is caught by the decode
    assert reasons["damaged.jpg"].startswith("undecodable: cannot decode image")
    job2 = wait_job(settings, job2)
    (item,) = JobStore(settings).items_of(job2["_id"])
    assert item["state"] == "failed" and item["error"].startswith("missing:")


def _finish_order(settings, job_ids: list[str]) -> list[str]:
    items = []
    for job_id in job_ids:
        items += JobStore(settings).items_of(job_id)
    finished = [it for it in items if it["state"] != "queued"]  # an open item has no result, so no time yet
    return [it["job_id"] for it in sorted(finished, key=lambda it: it["updated_at"])]


def test_premium_submitted_after_a_free_backlog_is_served_first(settings, workers):
    # Given a backlog of 20 free shards already queued
    images = random_images(25, seed=1)
    free = make_job(settings, images[:20], "blip", tier="free", shard_size=1)
    # If 5 premium shards are submitted later, and only then a worker starts
    premium = make_job(settings, images[20:], "blip", tier="premium", shard_size=1)
    workers.start("blip")
    wait_job(settings, premium)
    wait_job(settings, free)
    # I expect all 5 premium shards served before any free shard (the weighted schedule's first free slot is the 7th)
    order = ["free" if j == free else "premium" for j in _finish_order(settings, [free, premium])]
    assert order[:5] == ["premium"] * 5, order


def test_free_tier_keeps_its_share_under_sustained_premium_load(settings, workers):
    # Given 10 free, 10 plus and 20 premium shards queued together (weights premium=6, plus=3, free=1)
    images = random_images(40, seed=2)
    free = make_job(settings, images[:10], "blip", tier="free", shard_size=1)
    plus = make_job(settings, images[10:20], "blip", tier="plus", shard_size=1)
    premium = make_job(settings, images[20:], "blip", tier="premium", shard_size=1)
    workers.start("blip")
    # (the first 20 served are all the shares need: every tier still has work queued while they are)
    jobs, deadline = JobStore(settings), time.monotonic() + 300
    while sum(jobs.counts(j)["done"] for j in (free, plus, premium)) < 20:
        assert time.monotonic() < deadline, "the worker did not serve 20 shards"
        time.sleep(0.3)
    order = _finish_order(settings, [free, plus, premium])[:20]
    # I expect free to get one slot in ten while premium has work: not starved, not equal
    assert order.count(free) == 2, order
    # and plus its three in ten (swapped premium and plus weights would give it six)
    assert order.count(plus) == 6 and order.count(premium) == 12, order


def test_strict_priority_when_free_weight_is_zero(settings, workers):
    images = random_images(16, seed=3)
    free = make_job(settings, images[:8], "blip", tier="free", shard_size=1)
    premium = make_job(settings, images[8:], "blip", tier="premium", shard_size=1)
    workers.start("blip", {"CAPQ_TIER_WEIGHTS": "premium=1,plus=1,free=0"})
    wait_job(settings, free)
    order = _finish_order(settings, [free, premium])
    assert order[:8] == [premium] * 8


def test_kill_9_mid_job_loses_nothing_and_duplicates_nothing(settings, workers):
    # Short visibility timeout so the killed worker's shard is redelivered within the test.
    s, env = env_settings(settings, visibility_timeout_s=5, batch_size=8, shard_batches=2)
    first = workers.start("blip", env)
    job_id = make_job(s, random_images(500, seed=4), "blip")
    jobs = JobStore(s)
    while jobs.counts(job_id)["done"] < 100:
        assert first.poll() is None, "worker died on its own"
        time.sleep(0.1)
    workers.kill9(first)
    done_at_kill = jobs.counts(job_id)["done"]
    assert done_at_kill < 500
    workers.start("blip", env)
    # The redelivered shard's worker must recount and close the job itself: the waiter only reads it.
    job = wait_job_closed(s, job_id, timeout_s=600)
    assert job["counts"] == {"queued": 0, "done": 500, "failed": 0, "cancelled": 0, "total": 500}
    items = jobs.items_of(job_id)
    assert len(items) == 500 and len({it["sha256"] for it in items}) == 500
    assert CaptionStore(s).count({"job_id": job_id}) == 500


def test_kill_between_caption_insert_and_result_insert_loses_and_duplicates_nothing(settings, workers, tmp_path):
    # Given a worker that SIGKILLs itself right after its first caption insert, before any result is written
    s, env = env_settings(settings, visibility_timeout_s=5, batch_size=4, shard_batches=2)
    marker = tmp_path / "killed"
    first = workers.start("git", {**env, "PYTHONPATH": str(REPO)}, launch=("-m", "tests.e2e.crash_hooks", str(marker)))
    images = random_images(16, seed=8)
    job_id = make_job(s, images, "git")
    first.wait(300)
    assert first.returncode == -9 and marker.read_text().strip() == "4"
    # the crash hit between the two writes: captions stored whose items have no result yet
    jobs, captions = JobStore(s), CaptionStore(s)
    captioned = {d["sha256"] for d in captions.coll.find({"job_id": job_id}, {"sha256": 1})}
    orphaned = captioned - {it["sha256"] for it in jobs.items_of(job_id) if it["state"] != "queued"}
    assert len(orphaned) >= 4, (captioned, orphaned)
    # If a healthy worker takes over (the killed worker's shard is redelivered)
    workers.start("git", env)
    job = wait_job_closed(s, job_id)
    # I expect exact counts, one caption per image, and each result carrying the one stored caption
    assert job["counts"] == {"queued": 0, "done": 16, "failed": 0, "cancelled": 0, "total": 16}
    assert captions.count({"sha256": {"$in": [sha256_hex(d) for _, d in images]}, "model": "git"}) == 16
    items = {it["sha256"]: it for it in jobs.items_of(job_id)}
    stored = {d["sha256"]: d["caption"] for d in captions.coll.find({"sha256": {"$in": list(items)}, "model": "git"})}
    assert len(items) == 16 and all(items[sha]["caption"] == stored[sha] for sha in items)


def test_mongodb_outage_mid_job_loses_nothing(settings, workers, tmp_path):
    # Given a worker whose MongoDB is a private server we can stop
    url = f"mongodb://127.0.0.1:{free_port()}"
    svc = mongo_service(url, tmp_path)
    svc.start()
    try:
        s, env = env_settings(
            settings,
            mongo_url=url,
            connect_timeout_s=1,
            batch_size=4,
            shard_batches=1,
            task_max_retries=10,
            retry_backoff_max_s=4,
        )
        from storage.db import Mongo

        Mongo(s).ensure_indexes()
        workers.start("git", env)
        job_id = make_job(s, random_images(200, seed=5), "git")
        jobs = JobStore(s)
        while jobs.counts(job_id)["done"] < 20:
            time.sleep(0.1)
        # If MongoDB goes away for a few seconds
        svc.stop()
        time.sleep(3)
        svc.start()
        # I expect the job to finish with every image captioned exactly once
        job = wait_job(s, job_id, timeout_s=600)
        assert job["counts"]["done"] == 200 and job["counts"]["failed"] == 0
        assert CaptionStore(s).count({"job_id": job_id}) == 200
    finally:
        svc.stop()


def _capq(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "capq", *args], env=env, capture_output=True, text=True, timeout=120)


def test_work_that_keeps_failing_is_dead_lettered_and_can_be_redriven(settings, workers, tmp_path):
    url = f"mongodb://127.0.0.1:{free_port()}"
    svc = mongo_service(url, tmp_path)
    svc.start()
    try:
        s, env = env_settings(settings, mongo_url=url, connect_timeout_s=1, task_max_retries=1, retry_backoff_max_s=1)
        from storage.db import Mongo

        Mongo(s).ensure_indexes()
        job_id = make_job(s, seed_images()[:3], "vit-gpt2")
        # Given MongoDB is down for longer than the retries last
        svc.stop()
        workers.start("vit-gpt2", env)
        full_env = {**__import__("os").environ, **env}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            entries = [json.loads(line) for line in _capq(full_env, "dlq", "list", "--json").stdout.splitlines()]
            if entries:
                break
            time.sleep(0.5)
        assert len(entries) == 1 and "database unreachable" in entries[0]["error"]
        assert entries[0]["args"][0] == job_id and entries[0]["queue"] == "capq.vit-gpt2.free"
        # If MongoDB comes back and the operator re-drives the dead letters
        svc.start()
        assert _capq(full_env, "dlq", "retry", "--all").returncode == 0
        # I expect the job to complete and the dead-letter store to be empty
        job = wait_job(s, job_id)
        assert job["counts"]["done"] == 3
        assert _capq(full_env, "dlq", "list", "--json").stdout.strip() == ""
    finally:
        svc.stop()


def test_worker_exports_prometheus_metrics(settings, workers):
    port = free_port()
    workers.start("blip", args=["--metrics-port", str(port)])
    wait_job(settings, make_job(settings, random_images(10, seed=6), "blip"))
    bad = wait_job(settings, make_job(settings, [("bad.jpg", b"not an image")], "blip"))
    assert bad["counts"]["failed"] == 1
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'capq_images_captioned_total{model="blip",source="model"} 10.0' in body
    assert 'capq_caption_failures_total{model="blip",reason="undecodable"} 1.0' in body
    assert 'capq_batch_size_count{model="blip"}' in body and "capq_model_load_seconds" in body
    assert 'capq_queue_wait_seconds_count{model="blip",tier="free"} 2.0' in body


def test_broken_checkpoint_fails_the_worker_at_start_naming_it(settings, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    env = {**__import__("os").environ, **settings_env(settings)}
    proc = _capq(env, "worker", "--model", "blip", "--checkpoint", str(broken))
    assert proc.returncode != 0
    assert str(broken) in proc.stderr + proc.stdout
