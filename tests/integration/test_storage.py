"""Storage against the real S3 server and MongoDB wire server of the local stack."""

from __future__ import annotations

import multiprocessing as mp
import time
import urllib.request
import uuid

import pytest

from capq.settings import load_settings
from storage.blobs import ImageStore, object_key
from storage.captions import CaptionStore
from storage.db import INDEXES, Mongo
from storage.errors import DatabaseUnreachable, NotFound, ObjectStoreUnreachable
from storage.images import ImageRecords
from tests.conftest import SEED_IMAGES, free_port, settings_env


def test_image_round_trip_and_single_copy(settings):
    store, records = ImageStore(settings), ImageRecords(settings)
    data = SEED_IMAGES[0].read_bytes() + uuid.uuid4().bytes  # bytes no other test has stored
    sha, created = store.put(data, "image/jpeg")
    sha2, created2 = store.put(data, "image/jpeg")
    assert sha == sha2
    assert created is True and created2 is False, "the same bytes must be uploaded once"
    assert store.get(sha) == data and store.exists(sha)
    keys = store.client.list_objects_v2(Bucket=settings.s3_bucket, Prefix=object_key(sha))["KeyCount"]
    assert keys == 1
    for name in ("a.jpg", "b.jpg"):
        records.record_many([dict(sha256=sha, size=len(data), format="JPEG", width=640, height=427, file_name=name)])
    assert records.count(sha) == 1
    assert sorted(records.get(sha)["file_names"]) == ["a.jpg", "b.jpg"]


def test_presigned_url_serves_the_bytes(settings):
    store = ImageStore(settings)
    data = SEED_IMAGES[1].read_bytes()
    sha, _ = store.put(data)
    with urllib.request.urlopen(store.presigned_url(sha, expires_s=60), timeout=10) as resp:
        assert resp.read() == data


def test_missing_and_deleted_images_are_not_found(settings):
    store = ImageStore(settings)
    sha, _ = store.put(b"bytes to delete")
    store.delete(sha)
    assert not store.exists(sha)
    with pytest.raises(NotFound):
        store.get(sha)


def test_bucket_is_created_when_missing(settings):
    s = load_settings({**settings_env(settings), "CAPQ_S3_BUCKET": settings.s3_bucket + "-new"})
    store = ImageStore(s)
    store.ensure_bucket()
    store.ensure_bucket()  # idempotent
    sha, created = store.put(b"x")
    assert created and store.exists(sha)
    store.drop_bucket()


def test_indexes_are_idempotent_and_cover_caption_key(settings):
    mongo = Mongo(settings)
    mongo.ensure_indexes()
    mongo.ensure_indexes()
    for name in INDEXES:
        assert len(mongo[name].index_information()) >= len(INDEXES[name])
    unique = [ix for ix in mongo["captions"].index_information().values() if ix.get("unique")]
    assert [k for k, _ in unique[0]["key"]] == ["sha256", "model", "checkpoint", "config_hash"]


def _upsert_worker(env: dict, worker: int) -> None:
    store = CaptionStore(load_settings(env))
    docs = [
        {
            "sha256": f"{i:064x}",
            "model": "blip",
            "checkpoint": "ck",
            "config_hash": "h",
            "preset": "default",
            "caption": f"caption from worker {worker}",
            "job_id": "j",
        }
        for i in range(200)
    ]
    # Several smaller batches so the processes interleave.
    for start in range(0, 200, 25):
        store.insert_new(docs[start : start + 25])


def test_concurrent_upserts_write_each_caption_once(settings):
    env = settings_env(settings)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_upsert_worker, args=(env, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = CaptionStore(settings)
    assert store.count({"model": "blip", "checkpoint": "ck", "config_hash": "h"}) == 200


def test_dead_object_store_gives_typed_error_within_bound(settings):
    s = load_settings(
        {**settings_env(settings), "CAPQ_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}", "CAPQ_CONNECT_TIMEOUT_S": "1"}
    )
    t0 = time.monotonic()
    with pytest.raises(ObjectStoreUnreachable, match="object store unreachable at http://127.0.0.1"):
        ImageStore(s).get("0" * 64)
    # A functional bound, not a speed test: far below the library defaults (60 s connect, several retries).
    assert time.monotonic() - t0 < 20


def test_dead_database_gives_typed_error_within_bound(settings):
    s = load_settings(
        {
            **settings_env(settings),
            "CAPQ_MONGO_URL": f"mongodb://127.0.0.1:{free_port()}",
            "CAPQ_CONNECT_TIMEOUT_S": "1",
        }
    )
    mongo = Mongo(s)
    assert mongo.client.options.server_selection_timeout == 1.0
    t0 = time.monotonic()
    with pytest.raises(DatabaseUnreachable, match="database unreachable at mongodb://127.0.0.1"):
        CaptionStore(s).count()
    # pymongo's own default would wait 30 s; ours is the configured second plus slack.
    assert time.monotonic() - t0 < 20


def test_stopped_database_server_gives_typed_error(settings, tmp_path):
    from tooling.stack import mongo_service

    url = f"mongodb://127.0.0.1:{free_port()}"
    svc = mongo_service(url, tmp_path)
    svc.start()
    s = load_settings({**settings_env(settings), "CAPQ_MONGO_URL": url, "CAPQ_CONNECT_TIMEOUT_S": "1"})
    try:
        store = CaptionStore(s)
        assert store.count() == 0
        svc.stop()
        with pytest.raises(DatabaseUnreachable):
            store.count()
    finally:
        svc.stop()
