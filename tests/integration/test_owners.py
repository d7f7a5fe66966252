"""Erasure, retention and quotas against the real stores: shared images survive, late worker writes are undone,
an interrupted erasure completes when run again, and nothing of the erased owner is left in MongoDB or S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from capq.settings import load_settings
from producer.submit import submit
from storage.blobs import ImageStore
from storage.captions import CaptionStore
from storage.db import mongo
from storage.jobs import JobStore
from storage.owners import Owners
from storage.usage import UsageStore
from tests.conftest import REPO, settings_env
from tests.integration.test_producer_submit import random_jpeg
from workers import pipeline
from workers.retention import run_retention


def images(tmp_path, owner: str, seeds: list[int], names: dict[int, str] | None = None) -> list:
    """Files named after their owner (so a leftover file name is found by searching for the owner)."""
    folder = tmp_path / owner
    folder.mkdir(exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / ((names or {}).get(seed) or f"{owner}-{seed}.jpg")
        path.write_bytes(random_jpeg(seed))
        paths.append(path)
    return paths


def traces(s, needles: list[str]) -> list[str]:
    """Every MongoDB document (audit records aside: they are meant to keep who was erased) and S3 key that
    mentions one of `needles`."""
    db = mongo(s).db
    found = []
    for name in db.list_collection_names():
        if name == "audit":
            continue
        for doc in db[name].find({}):
            text = json.dumps(doc, default=str)
            found += [f"{name}: {n}" for n in needles if n in text]
    for page in ImageStore(s).client.get_paginator("list_objects_v2").paginate(Bucket=s.s3_bucket):
        for obj in page.get("Contents", []):
            found += [f"s3: {obj['Key']}" for n in needles if n in obj["Key"]]
    return found


def s3_has(s, sha: str) -> bool:
    return ImageStore(s).exists(sha)


class ErasingCaptioner:
    """A stand-in model whose generate() lets the test act while a batch is on the 'GPU'."""

    def __init__(self, during_generate):
        self.during_generate = during_generate

    def preprocess(self, image):
        return image

    def generate(self, batch, generation=None):
        self.during_generate()
        return [f"caption {i}" for i in range(len(batch))]


def worker(s, captioner) -> pipeline.Worker:
    return pipeline.Worker(
        model="blip",
        checkpoint="stand-in",
        captioner=captioner,
        images=ImageStore(s),
        captions=CaptionStore(s),
        jobs=JobStore(s),
        worker_id="w-test",
        batch_size=4,
        usage=UsageStore(s),
    )


def test_erasure_while_a_worker_holds_a_shard_keeps_the_shared_image_and_writes_nothing_back(psettings, tmp_path):  # noqa: F811
    s = psettings
    # Given alice and bob who both submitted the same image, alice two more, bob one more
    shared = images(tmp_path, "shared", [1], {1: "bobs-shared-photo.jpg"})[0]
    bob = submit(s, [shared, *images(tmp_path, "bob", [2])], "blip", owner="bob")
    alice_shared = tmp_path / "alice-shared.jpg"
    alice_shared.write_bytes(shared.read_bytes())
    alice = submit(s, [alice_shared, *images(tmp_path, "alice", [3, 4])], "blip", owner="alice")
    ImageStore(s).put_key("owners/alice/staged.jpg", random_jpeg(9), "image/jpeg")
    jobs = JobStore(s)
    alice_shas = [it["sha256"] for it in jobs.items_of(alice.job_id)]
    bob_shas = [it["sha256"] for it in jobs.items_of(bob.job_id)]
    shared_sha = sorted(set(alice_shas) & set(bob_shas))[0]
    # If alice is erased while a worker is generating her shard's captions
    erased = {}
    w = worker(s, ErasingCaptioner(lambda: erased.setdefault("counts", Owners(s).erase("alice", "operator:test"))))
    result = pipeline.caption_shard(w, alice.job_id, "default", alice_shas)
    assert result.done == 3 and erased["counts"]["jobs"] == 1, "the worker did finish its batch after the erasure"
    # I expect the worker's late writes undone: nothing of alice anywhere, in MongoDB or S3
    assert traces(s, ["alice", alice.job_id]) == []
    assert not any(s3_has(s, sha) for sha in set(alice_shas) - {shared_sha})
    assert erased["counts"]["images_deleted"] == 2 and erased["counts"]["images_kept_shared"] == 1
    assert erased["counts"]["staged_objects"] == 1 and erased["counts"]["keys"] == 0
    # ...and bob's shared image intact: bytes, his file name only, and his job still captionable
    assert s3_has(s, shared_sha)
    names = mongo(s)["images"].find_one({"sha256": shared_sha})["file_names"]
    assert len(names) == 1 and names[0].endswith("/shared/bobs-shared-photo.jpg")
    bob_worker = worker(s, ErasingCaptioner(lambda: None))
    pipeline.caption_shard(bob_worker, bob.job_id, "default", bob_shas)
    assert jobs.refresh_counts(bob.job_id)["counts"]["done"] == 2
    # A shard of the erased job that arrives later is dropped without a trace (no dead letter, no write)
    late = pipeline.caption_shard(worker(s, ErasingCaptioner(lambda: None)), alice.job_id, "default", alice_shas)
    assert late.skipped == 3 and traces(s, [alice.job_id]) == []
    audit = Owners(s).audit("alice")
    assert audit[0]["by"] == "operator:test" and audit[0]["state"] == "done" and audit[0]["counts"]["items"] == 3


def test_an_interrupted_erasure_run_again_completes(psettings, tmp_path):  # noqa: F811
    s = psettings
    # Given carl with two jobs and two keys
    from storage.apikeys import ApiKeys

    first = submit(s, images(tmp_path, "carl", [11, 12]), "blip", owner="carl")
    submit(s, images(tmp_path, "carl", [13]), "blip,git", owner="carl")
    ApiKeys(s).create("carl", "free")
    ApiKeys(s).create("carl", "plus")
    shas = [it["sha256"] for it in JobStore(s).items_of(first.job_id)]

    # If the erasure dies right after removing the jobs (before results, items and images)
    def power_cut(step: str, n: int) -> None:
        if step == "jobs":
            raise KeyboardInterrupt("power cut")

    with pytest.raises(KeyboardInterrupt):
        Owners(s).erase("carl", "operator:test", on_step=power_cut)
    # I expect it half done: keys and jobs gone, items and image bytes still there
    db = mongo(s)
    assert db["api_keys"].count_documents({"owner": "carl"}) == 0 and db["jobs"].count_documents({"owner": "carl"}) == 0
    assert db["job_items"].count_documents({"owner": "carl"}) == 4 and all(s3_has(s, sha) for sha in shas)
    # ...and when the operator runs the command again, it completes
    env = {**os.environ, **settings_env(s), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "capq", "owners", "delete", "carl", "--yes", "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    removed = json.loads(done.stdout)["removed"]
    assert removed["items"] == 4 and removed["images_deleted"] == 3
    assert traces(s, ["carl"] + [first.job_id]) == [] and not any(s3_has(s, sha) for sha in shas)
    runs = Owners(s).audit("carl")
    assert [r["state"] for r in runs] == ["done", "running"] and runs[0]["by"].startswith("operator:")


def test_retention_deletes_old_images_unless_an_unfinished_job_or_a_recent_one_holds_them(psettings, tmp_path):  # noqa: F811
    s = load_settings({**settings_env(psettings), "CAPQ_RETENTION_DAYS": "30"})
    db = mongo(s)
    jobs = JobStore(s)
    # Given dora's old finished job (two images), an old image in a job still queued, and a new image
    old = submit(s, images(tmp_path, "dora", [21, 22]), "blip", owner="dora")
    held = submit(s, images(tmp_path, "dora", [23]), "blip", owner="dora")
    new = submit(s, images(tmp_path, "dora", [24]), "blip", owner="dora")
    old_shas = [it["sha256"] for it in jobs.items_of(old.job_id)]
    held_sha = jobs.items_of(held.job_id)[0]["sha256"]
    new_sha = jobs.items_of(new.job_id)[0]["sha256"]
    pipeline.caption_shard(worker(s, ErasingCaptioner(lambda: None)), old.job_id, "default", old_shas)
    assert jobs.refresh_counts(old.job_id)["state"] == "done" and jobs.get(held.job_id)["state"] == "queued"
    long_ago = datetime.now(UTC) - timedelta(days=40)
    db["images"].update_many({"sha256": {"$in": old_shas + [held_sha]}}, {"$set": {"first_seen": long_ago}})
    db["job_items"].update_many({"sha256": {"$in": old_shas + [held_sha]}}, {"$set": {"created_at": long_ago}})
    # If retention runs (what the beat task calls)
    counts = run_retention(s)
    # I expect the old finished images gone with their captions, items and results; the others kept
    assert counts["images_expired"] == 2 and counts["images_held_by_unfinished_jobs"] == 1
    for sha in old_shas:
        assert not s3_has(s, sha)
        assert all(
            db[c].count_documents({"sha256": sha}) == 0 for c in ("images", "captions", "job_items", "job_results")
        )
    assert s3_has(s, held_sha) and s3_has(s, new_sha) and db["images"].count_documents({"sha256": new_sha}) == 1
    assert Owners(s).audit()[0]["action"] == "retention"
    # And with retention off (the default) nothing is touched
    assert run_retention(psettings) == {"retention": "off"} and s3_has(s, held_sha)


def test_retention_is_scheduled_by_beat_only_when_set(psettings):  # noqa: F811
    from capq.celery_app import create_app

    assert "retention" not in create_app(psettings).conf.beat_schedule
    on = load_settings({**settings_env(psettings), "CAPQ_RETENTION_DAYS": "7", "CAPQ_RETENTION_INTERVAL_S": "600"})
    entry = create_app(on).conf.beat_schedule["retention"]
    assert entry["task"] == "capq.retention" and entry["schedule"] == 600.0


def test_the_cli_says_when_the_daily_quota_is_reached(psettings, tmp_path):  # noqa: F811
    env = {**os.environ, **settings_env(psettings), "PYTHONPATH": str(REPO), "CAPQ_DAILY_IMAGE_QUOTAS": "free=2"}
    paths = [str(p) for p in images(tmp_path, "erin", [31, 32])]

    def capq(*args):
        return subprocess.run(
            [sys.executable, "-m", "capq", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
        )

    first = capq("submit", *paths, "--model", "blip", "--owner", "erin", "--tier", "free")
    assert first.returncode == 0, first.stderr
    over = capq("submit", paths[0], "--model", "git", "--owner", "erin", "--tier", "free")
    assert over.returncode == 2
    assert "daily quota reached" in over.stderr and "resets at" in over.stderr
    # another owner keeps its own quota
    assert capq("submit", paths[0], "--model", "blip", "--owner", "fred", "--tier", "free").returncode == 0


class TextCaptioner(ErasingCaptioner):
    """A stand-in model that captions its batch with the given texts, in order."""

    def __init__(self, texts: list[str]):
        super().__init__(lambda: None)
        self.texts = texts

    def generate(self, batch, generation=None):
        return self.texts[: len(batch)]


class BracketProvider:
    """A stand-in translation provider: '[target] text'."""

    name = "bracket"
    paid = True

    def translate(self, texts: list[str], target: str) -> list[str]:
        return [f"[{target}] {t}" for t in texts]


def translations_of(s, text: str) -> dict[str, int]:
    """How many translation memory entries, history rows and Redis cache entries hold `text` (by its sha256)."""
    import redis

    from capq.names import TRANSLATE_CACHE_KEY
    from translation.service import text_sha

    sha, db = text_sha(text), mongo(s)
    cached = redis.Redis.from_url(s.redis_url).scan_iter(match=f"{TRANSLATE_CACHE_KEY}*:{sha}")
    return {
        "memory": db["translations"].count_documents({"text_sha256": sha}),
        "history": db["translation_history"].count_documents({"text_sha256": sha}),
        "cache": len(list(cached)),
    }


def test_erasure_removes_translations_of_caption_texts_nobody_else_has(psettings, tmp_path, monkeypatch):  # noqa: F811
    from translation.service import Translator

    s = psettings
    own, shared_text = "a red kite over gwen's dunes", "a kettle on a wooden table"
    # Given gwen's two images captioned with her own text and a common one, and hank's image with the common text
    gwen = submit(s, images(tmp_path, "gwen", [41, 42]), "blip", owner="gwen")
    hank = submit(s, images(tmp_path, "hank", [43]), "blip", owner="hank")
    jobs = JobStore(s)
    gwen_shas = [it["sha256"] for it in jobs.items_of(gwen.job_id)]
    pipeline.caption_shard(worker(s, TextCaptioner([own, shared_text])), gwen.job_id, "default", gwen_shas)
    pipeline.caption_shard(
        worker(s, TextCaptioner([shared_text])),
        hank.job_id,
        "default",
        [it["sha256"] for it in jobs.items_of(hank.job_id)],
    )
    # ...both texts translated into two languages (memory, history and cache)
    for target in ("vi", "de"):
        assert Translator(s, providers=[BracketProvider()]).translate([own, shared_text], target)[own].via == "provider"
    assert translations_of(s, own) == {"memory": 2, "history": 2, "cache": 2} == translations_of(s, shared_text)

    # If gwen's erasure is cut off after her captions went, before their translations did
    def power_cut(self, shas):
        raise KeyboardInterrupt("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(Owners, "_forget_translations", power_cut)
        with pytest.raises(KeyboardInterrupt):
            Owners(s).erase("gwen", "operator:test")
    assert mongo(s)["captions"].count_documents({"caption": own}) == 0 and translations_of(s, own)["memory"] == 2
    # ...and is run again
    Owners(s).erase("gwen", "operator:test")
    # I expect no translation of her own text left in MongoDB or Redis, and the common text's translations kept
    assert translations_of(s, own) == {"memory": 0, "history": 0, "cache": 0}
    assert traces(s, ["gwen", own]) == [] and mongo(s)["image_gc"].count_documents({}) == 0
    assert translations_of(s, shared_text) == {"memory": 2, "history": 2, "cache": 2}
